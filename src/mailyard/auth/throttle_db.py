"""The login throttle kept in PostgreSQL, shared by every node of a store
on it, so a password-guessing client cannot multiply its budget by the
number of nodes (nor by spreading attempts in flight over them).

``DatabaseThrottle`` is auth/throttle.py's ``LoginThrottle`` with its three
tables held in the database instead of this process: each call locks the
counters of its keys (a transaction-scoped advisory lock per key, taken in
key order), loads them, runs the pure throttle logic on them and writes them
back, in one transaction. Times are stored as wall-clock seconds (the
callers' clock is monotonic and differs between hosts). An attempt in
flight holds its reservation for at most ``PENDING_TTL`` seconds, so a node
that dies mid-login does not hold the budget for ever.

The table is migration 3 of the store's schema
(store/postgresql/schema.py), applied when the first connection opens.

A call is a round trip to the database, which may also wait for another
node's lock on the same keys: from an event loop, calls run on one thread
of this throttle's own, in the order they are made (``reserve_async``,
``before_attempt_async`` wait there; ``fail``, ``succeed`` and the
``record_*`` reports are queued and the caller goes on), so the loop never
waits for the database and a report is always counted before a later
reservation asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..store.api import StoreUnavailable
from .throttle import Attempt, Busy, Locked, LoginThrottle, ThrottlePolicy, _Entry, _Table

# Seconds a reservation counts as in flight at most (the longest delay, the
# password check and a slow client's SASL exchange fit well within it).
PENDING_TTL = 120.0

log = logging.getLogger("mailyard.auth.throttle")

class DatabaseThrottle(LoginThrottle):
    """A ``LoginThrottle`` whose counters live in the database ``dsn`` names."""

    def __init__(self, dsn: str, policy: ThrottlePolicy | None = None) -> None:
        super().__init__(policy)
        self.dsn = dsn
        self._conn: Any = None
        self._migrated = False
        self._lock = threading.Lock()
        self._local = threading.local()  # inside _run on this thread
        # the callers' clock (time.monotonic, auth/service.py) -> wall clock
        self._shift = time.time() - time.monotonic()
        # the calls of event loops, in order (see the module docstring)
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailyard-throttle-db")

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            if not self._migrated:
                from ..store.postgresql.schema import migrate_sync

                migrate_sync(self.dsn)
                self._migrated = True
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        return self._conn

    def _tables(self) -> dict[str, _Table]:
        return {"ip": self._ips, "account": self._accounts, "pair": self._pairs}

    def _run(self, keys: tuple[str | None, str | None, str | None], now: float, fn: Any) -> Any:
        """``fn()`` on the counters of ``keys`` (ip, account, pair) loaded from
        the database, which gets them back in the same transaction."""
        if getattr(self._local, "inside", False):  # reserve() asks before_attempt(): the counters are loaded already
            return fn()
        wanted = [(kind, key) for kind, key in zip(("ip", "account", "pair"), keys, strict=True) if key is not None]
        import psycopg

        for attempt in (1, 2):
            try:
                return self._run_once(wanted, now, fn)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                # a connection from before a restart of the database is dead:
                # once more on a new one; then the login is refused for now
                with self._lock:
                    if self._conn is not None:
                        with contextlib.suppress(Exception):
                            self._conn.close()
                        self._conn = None
                if attempt == 2:
                    raise StoreUnavailable("the login service is unavailable, try again later") from exc
        raise AssertionError("unreachable")

    def _run_once(self, wanted: list[tuple[str, str]], now: float, fn: Any) -> Any:
        raw = {key: key.encode("utf-8", "surrogatepass") for _, key in wanted}
        with self._lock:
            conn = self._connection()
            shift = self._shift
            wall = now + shift
            with conn.transaction():
                for kind, key in sorted(wanted):
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s || encode(%s, 'hex'), 0))",
                                 (f"throttle:{kind}:", raw[key]))
                rows = conn.execute(
                    "SELECT kind, key, failures, pending, pending_until, last_failure, locked_until"
                    " FROM login_throttle WHERE (kind, key) IN (SELECT * FROM unnest(%s::text[], %s::bytea[]))",
                    ([k for k, _ in wanted], [raw[k] for _, k in wanted])).fetchall()
                tables = self._tables()
                for table in tables.values():
                    table.entries.clear()
                for kind, key, failures, pending, pending_until, last_failure, locked_until in rows:
                    tables[kind].entries[bytes(key).decode("utf-8", "surrogatepass")] = _Entry(
                        failures=failures, pending=pending if pending_until > wall else 0,
                        last_failure=last_failure - shift, locked_until=locked_until - shift if locked_until else 0.0)
                self._local.inside = True
                try:
                    result = fn()
                finally:
                    self._local.inside = False
                for kind, key in wanted:
                    entry = tables[kind].entries.get(key)
                    if entry is None:
                        conn.execute("DELETE FROM login_throttle WHERE kind = %s AND key = %s", (kind, raw[key]))
                        continue
                    conn.execute(
                        "INSERT INTO login_throttle VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (kind, key)"
                        " DO UPDATE SET failures = excluded.failures, pending = excluded.pending,"
                        " pending_until = CASE WHEN excluded.pending > login_throttle.pending"
                        "  THEN excluded.pending_until ELSE login_throttle.pending_until END,"
                        " last_failure = excluded.last_failure, locked_until = excluded.locked_until",
                        (kind, raw[key], entry.failures, entry.pending, wall + PENDING_TTL, entry.last_failure + shift,
                         entry.locked_until + shift if entry.locked_until else 0.0))
                for table in tables.values():
                    table.entries.clear()
            return result

    # -- the public API, each call one transaction ----------------------------------
    def before_attempt(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        parent = super().before_attempt
        return self._run(self._keys(ip, account), now, lambda: parent(ip, account, now))

    def reserve(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        parent = super().reserve
        return self._run(self._keys(ip, account), now, lambda: parent(ip, account, now))

    async def reserve_async(self, ip: str, account: str | None, now: float) -> Attempt | Locked | Busy:
        return await asyncio.get_running_loop().run_in_executor(self._calls, self.reserve, ip, account, now)

    async def before_attempt_async(self, ip: str, account: str | None, now: float) -> float | Locked | Busy:
        return await asyncio.get_running_loop().run_in_executor(self._calls, self.before_attempt, ip, account, now)

    def _report(self, fn: Callable[[], None]) -> None:
        """Run a report now, or (called from an event loop) queue it on the
        throttle's thread, ahead of any later call."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            fn()
            return

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("the login throttle's database did not take a report")

        self._calls.submit(run)

    def fail(self, attempt: Attempt, now: float) -> None:
        parent = super().fail
        keys = (attempt.ip_key, attempt.account_key, attempt.pair_key)
        self._report(lambda: self._run(keys, now, lambda: parent(attempt, now)))

    def succeed(self, attempt: Attempt, now: float) -> None:
        parent = super().succeed
        keys = (attempt.ip_key, attempt.account_key, attempt.pair_key)
        self._report(lambda: self._run(keys, now, lambda: parent(attempt, now)))

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        parent = super().record_failure
        self._report(lambda: self._run(self._keys(ip, account), now, lambda: parent(ip, account, now)))

    def record_success(self, ip: str, account: str, now: float) -> None:
        parent = super().record_success
        self._report(lambda: self._run(self._keys(ip, account), now, lambda: parent(ip, account, now)))

    def __len__(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT count(*) FROM login_throttle").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._calls.shutdown(wait=True)  # the reports queued are counted
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
