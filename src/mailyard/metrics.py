"""Prometheus metrics: the counters the server side bumps, and the text the
``/metrics`` endpoint serves (net/metrics_http.py, ``[metrics] listen``).

The rest of the code calls the small API here (`count_connection`,
`count_connection_refused`, `count_login`, `count_message`,
`count_recipient_rejected`, `count_abuse`, `count_tls_failure`,
`count_delivery`, `observe_delivery`); it never touches prometheus_client.
Each call is an increment of an in-memory value (a dict lookup and a lock;
in multiprocess mode a write into an mmap()ed file), no system call: the
multiprocess values tell a forked child by the process id this module
keeps (``_process_id``, renewed in the child at fork), not by a getpid()
per increment, prometheus_client's default.

Several processes: `enable_multiprocess` points prometheus_client's
multiprocess mode at a directory (the data directory's ``run/metrics``),
emptied first; every process that counts writes its own file there and
the process serving ``/metrics`` sums them (``MultiProcessCollector``).
It has to run before the processes count anything (at ``serve`` start,
before workers are started). Without it the values live in this process.

Gauges that describe shared state (queue size and age, store size) are
not counted by anyone: the scrape reads them (`Snapshot`), so they are
right whatever process serves the scrape.

Every metric is documented in docs/operations.md.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "CONTENT_TYPE_LATEST", "Snapshot", "count_abuse", "count_connection", "count_connection_refused",
    "count_delivery", "count_login", "count_message", "count_recipient_rejected", "count_tls_failure",
    "enable_multiprocess", "exposition", "observe_delivery",
]

# Every metric has labels: a labelled metric creates its values at the first
# `labels()`, after `enable_multiprocess` chose where values live.
CONNECTIONS = Counter(
    "mailyard_connections", "Client connections accepted, per service (listener)", ["service"], registry=None,
)
LOGINS = Counter(
    "mailyard_logins", "Login attempts by protocol and result (success, failed, locked)",
    ["proto", "result"], registry=None,
)
MESSAGES = Counter(
    "mailyard_messages", "Messages received over SMTP by service, result (accepted, rejected) and reason",
    ["service", "result", "reason"], registry=None,
)
RECIPIENTS_REJECTED = Counter(
    "mailyard_recipients_rejected", "RCPT TO refused, by service and reason", ["service", "reason"], registry=None,
)
DELIVERIES = Counter(
    "mailyard_deliveries", "Delivery outcomes per recipient: kind (local, remote) and result"
    " (delivered, queued, deferred, bounced)", ["kind", "result"], registry=None,
)
DELIVERY_SECONDS = Histogram(
    "mailyard_delivery_seconds", "Time from acceptance to the final outcome of a recipient (delivered or"
    " bounced), per kind", ["kind"], registry=None,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf")),
)
CONNECTIONS_REFUSED = Counter(
    "mailyard_connections_refused", "Client connections refused over a connection cap ([limits]"
    " max_connections, max_connections_per_ip), per service and reason", ["service", "reason"], registry=None,
)
ABUSE_REFUSALS = Counter(
    "mailyard_abuse_refusals", "Clients and accounts refused by the abuse defences (spam/), by service and"
    " reason (rate, early-talker, out-of-sync, greylisted, submission-limit)", ["service", "reason"], registry=None,
)
TLS_FAILURES = Counter(
    "mailyard_tls_failures", "TLS handshakes that failed (STARTTLS, or an implicit-TLS port), by service and"
    " reason (timeout, closed, protocol, error)", ["service", "reason"], registry=None,
)
_ALL = (CONNECTIONS, CONNECTIONS_REFUSED, LOGINS, MESSAGES, RECIPIENTS_REJECTED, DELIVERIES, DELIVERY_SECONDS,
        ABUSE_REFUSALS, TLS_FAILURES)

# This process's values (single-process mode).
_LOCAL = CollectorRegistry(auto_describe=True)
for _metric in _ALL:
    _LOCAL.register(_metric)

_multiproc_dir: Path | None = None

_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


def _process_id() -> int:
    """This process's id, as prometheus_client's multiprocess values ask for
    it at every increment to notice a fork (``MultiProcessValue``)."""
    return _pid


def _file_values() -> None:
    """Values in per-process files from here on (prometheus_client picks its
    value class when imported; the directory is set now)."""
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)


def enable_multiprocess(directory: Path) -> None:
    """Keep every process's values in files under ``directory`` (emptied
    now) so the scrape sums them. Call before anything is counted and
    before worker processes start; they inherit the choice through the
    environment (``PROMETHEUS_MULTIPROC_DIR``)."""
    global _multiproc_dir
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    for metric in _ALL:
        metric.clear()  # children made before hold in-process values
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _file_values()
    _multiproc_dir = directory


def inherit_multiprocess() -> None:
    """In a worker process: use the directory the parent chose, if any."""
    global _multiproc_dir
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and _multiproc_dir is None:
        _file_values()
        _multiproc_dir = Path(path)


# --- the API the server side calls ------------------------------------------------
def count_connection(service: str) -> None:
    CONNECTIONS.labels(service).inc()


def count_connection_refused(service: str, reason: str) -> None:
    """A connection refused over a cap: every one, where the log has a budget of lines."""
    CONNECTIONS_REFUSED.labels(service, reason).inc()


def count_login(proto: str, result: str) -> None:
    """``result``: success, failed (wrong credentials and other refusals
    after a check) or locked (refused by the throttle without a check)."""
    LOGINS.labels(proto, result).inc()


def count_message(service: str, result: str, reason: str = "") -> None:
    """A message at the end of DATA: accepted, or rejected with a reason."""
    MESSAGES.labels(service, result, reason).inc()


def count_recipient_rejected(service: str, reason: str) -> None:
    RECIPIENTS_REJECTED.labels(service, reason).inc()


def count_abuse(service: str, reason: str) -> None:
    """A connection, message or recipient refused by an abuse defence."""
    ABUSE_REFUSALS.labels(service, reason).inc()


def count_tls_failure(service: str, reason: str) -> None:
    """A TLS handshake that failed: every one, where the log has a budget of lines."""
    TLS_FAILURES.labels(service, reason).inc()


def count_delivery(kind: str, result: str, count: int = 1) -> None:
    """``count`` recipients of ``kind`` (local, remote) reached ``result``."""
    if count:
        DELIVERIES.labels(kind, result).inc(count)


def observe_delivery(kind: str, seconds: float) -> None:
    DELIVERY_SECONDS.labels(kind).observe(max(0.0, seconds))


# --- the scrape ------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """Shared state read at scrape time."""

    queue_messages: int = 0
    queue_recipients: int = 0
    queue_oldest_seconds: float = 0.0
    store_bytes: int = 0


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> list[GaugeMetricFamily]:
        s = self.snapshot
        return [
            GaugeMetricFamily("mailyard_queue_messages", "Messages in the outbound queue", value=s.queue_messages),
            GaugeMetricFamily("mailyard_queue_recipients", "Recipients still pending in the outbound queue",
                              value=s.queue_recipients),
            GaugeMetricFamily("mailyard_queue_oldest_seconds", "Age of the oldest message in the outbound queue"
                              " (0 when empty)", value=s.queue_oldest_seconds),
            GaugeMetricFamily("mailyard_store_bytes", "Bytes on disk of the store (database and message bodies)",
                              value=s.store_bytes),
        ]


def exposition(snapshot: Snapshot) -> bytes:
    """The text a scrape returns: every process's counters and ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    if _multiproc_dir is not None:
        MultiProcessCollector(registry, path=str(_multiproc_dir))
    else:
        registry.register(_LocalCollector())
    registry.register(_SnapshotCollector(snapshot))  # type: ignore[arg-type]
    return generate_latest(registry)


class _LocalCollector:
    def collect(self):  # type: ignore[no-untyped-def]
        return _LOCAL.collect()
