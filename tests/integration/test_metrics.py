"""The Prometheus endpoint ([metrics] listen, net/metrics_http.py): scraped
with httpx, parsed with prometheus_client's parser, before and after real
SMTP, IMAP and POP3 work and failed logins; in process, and from a real
``mailyard serve`` (multiprocess mode: values in files, summed at scrape)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailyard.config import Config
from mailyard.store.api import NewQueueEntry, NewRecipient
from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import ServeProcess, free_port

ALICE = "alice@example.test"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _work(host: str, port: Callable[[str], int]) -> None:
    """Two messages to alice, a refused relay, a wrong and a right password
    on IMAP, a wrong one on POP3."""
    with smtplib.SMTP(host, port("smtp"), timeout=30) as s:
        s.sendmail("sender@remote.test", [ALICE], b"Subject: one\r\n\r\nhello\r\n")
        s.sendmail("sender@remote.test", [ALICE], b"Subject: two\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("sender@remote.test", ["victim@elsewhere.test"], b"Subject: relay\r\n\r\nx\r\n")
    imap = imaplib.IMAP4(host, port("imap"), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, "wrong")
    imap.logout()
    imap = imaplib.IMAP4(host, port("imap"), timeout=30)
    imap.login(ALICE, USERS[ALICE])
    imap.logout()
    pop = poplib.POP3(host, port("pop3"), timeout=30)
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    pop.quit()


def _check_moved(before: Samples, after: Samples) -> None:
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mailyard_connections_total", service="smtp") == 1
    assert delta("mailyard_connections_total", service="imap") == 2
    assert delta("mailyard_connections_total", service="pop3") == 1
    assert delta("mailyard_messages_total", service="smtp", result="accepted", reason="") == 2
    assert delta("mailyard_recipients_rejected_total", service="smtp", reason="relay") == 1
    assert delta("mailyard_deliveries_total", kind="local", result="delivered") == 2
    assert delta("mailyard_delivery_seconds_count", kind="local") == 2
    assert delta("mailyard_delivery_seconds_bucket", kind="local", le="+Inf") == 2
    assert delta("mailyard_logins_total", proto="imap", result="failed") == 1
    assert delta("mailyard_logins_total", proto="imap", result="success") == 1
    assert delta("mailyard_logins_total", proto="pop3", result="failed") == 1
    assert value(after, "mailyard_queue_messages") == 0
    assert value(after, "mailyard_queue_oldest_seconds") == 0
    assert value(after, "mailyard_store_bytes") > value(before, "mailyard_store_bytes") > 0


def test_metrics_move_with_real_work(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    port = server.port("metrics")
    before = scrape(port)
    _work(server.host, server.port)
    after = scrape(port)
    _check_moved(before, after)


def test_queue_gauges(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    queue = server.server.queue  # type: ignore[union-attr]
    assert queue is not None
    server.call(queue.stop())  # the entry stays put: nobody delivers it
    before = scrape(server.port("metrics"))
    assert value(before, "mailyard_queue_messages") == 0

    async def enqueue() -> None:
        entry = NewQueueEntry(ALICE, [NewRecipient("a@remote.test"), NewRecipient("b@remote.test")])
        await server.store.queue_submit(b"Subject: x\r\n\r\nbody\r\n", entry)

    server.call(enqueue())
    after = scrape(server.port("metrics"))
    assert value(after, "mailyard_queue_messages") == 1
    assert value(after, "mailyard_queue_recipients") == 2
    assert value(after, "mailyard_queue_oldest_seconds") >= 0


def test_only_get_metrics_is_served(make_server: Callable[..., RunningServer]) -> None:
    server = make_server()
    base = f"http://127.0.0.1:{server.port('metrics')}"
    assert httpx.get(base + "/", timeout=30).status_code == 404
    assert httpx.post(base + "/metrics", timeout=30).status_code == 405


def test_metrics_are_off_when_listen_is_empty(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(configure=lambda cfg: setattr(cfg.metrics, "listen", ""))
    assert "metrics" not in server.server.listeners  # type: ignore[union-attr]


def test_metrics_of_a_real_serve_in_multiprocess_mode(tmp_path: Path) -> None:
    """``mailyard serve`` keeps its values in files under run/metrics (so
    worker processes add up); the scrape sums them."""
    metrics_port = free_port()

    def configure(cfg: Config) -> None:
        cfg.metrics.listen = f"127.0.0.1:{metrics_port}"

    proc = ServeProcess(tmp_path / "data", configure)
    try:
        before = scrape(metrics_port)
        _work(proc.host, proc.port)
        after = scrape(metrics_port)
        files = sorted(p.name for p in (tmp_path / "data" / "run" / "metrics").iterdir())
    finally:
        proc.stop()
    print("multiprocess files:", files)
    assert files and all(name.endswith(".db") for name in files)
    _check_moved(before, after)


def test_a_taken_metrics_port_is_reported_and_mail_flows(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def configure(cfg: Config) -> None:
            cfg.server.log_level = "info"
            cfg.metrics.listen = f"127.0.0.1:{port}"

        proc = ServeProcess(tmp_path / "data", configure)
        try:
            with smtplib.SMTP(proc.host, proc.port("smtp"), timeout=30) as s:
                s.sendmail("sender@remote.test", [ALICE], b"Subject: one\r\n\r\nhello\r\n")
            assert proc.alive()
        finally:
            proc.stop()
    (line,) = [line for line in proc.output if "event=listen_failed" in line]
    assert f"proto=metrics ip=127.0.0.1 port={port}" in line
