"""The server's log: one line per event with fixed fields in a fixed order
(mailyard/logs.py), in text (key=value) and JSON, from a real ``mailyard
serve``; unique queue ids; no asyncio warning when a TLS client closes."""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import poplib
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard.config import Config
from mailyard.logs import render_value
from mailyard.store.api import NotFound
from tests.conftest import USERS, RunningServer
from tests.integration.serve_process import ServeProcess, free_port
from tests.waiting import wait_until

ALICE = "alice@example.test"

# One text line: ts level logger event, then key=value pairs; a value is a
# bare token or a JSON string.
_PAIR = r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)'
LINE = re.compile(rf"^ts=\S+ level=\w+ logger=\S+ event=\w+(?: {_PAIR})*$")


def parse_line(line: str) -> list[tuple[str, str]]:
    """A text log line -> [(key, value)] in order (JSON strings decoded)."""
    assert LINE.match(line), line
    return [(k, json.loads(v) if v.startswith('"') else v) for k, v in re.findall(_PAIR, line)]


def _serve(tmp_path: Path, log_format: str) -> ServeProcess:
    def configure(cfg: Config) -> None:
        cfg.server.log_level = "info"
        cfg.server.log_format = log_format
        cfg.ports.http = free_port()
        cfg.metrics.listen = f"127.0.0.1:{free_port()}"

    return ServeProcess(tmp_path / "data", configure)


def _session(proc: ServeProcess) -> None:
    """An SMTP delivery, a wrong IMAP password, a wrong POP3 password."""
    with smtplib.SMTP(proc.host, proc.port("smtp"), timeout=30) as s:
        s.sendmail("sender@remote.test", [ALICE], b"Subject: log test\r\n\r\nhello\r\n")
    imap = imaplib.IMAP4(proc.host, proc.port("imap"), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, "wrong-password")
    imap.logout()
    pop = poplib.POP3(proc.host, proc.port("pop3"), timeout=30)
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong-password")
    pop.quit()


def _wait_for(proc: ServeProcess, what: Callable[[list[str]], bool]) -> list[str]:
    def lines() -> list[str]:
        return [line.rstrip("\n") for line in list(proc.output)]

    wait_until(lambda: what(lines()), timeout=30, what=lambda: "\n".join(lines()))
    return lines()


def _has_events(**counts: int) -> Callable[[list[str]], bool]:
    """Whether the log holds at least so many lines of each event (a process
    writes them in its own time: wait for all that the session caused)."""
    def check(lines: list[str]) -> bool:
        return all(sum(f"event={n}" in line or f'"event": "{n}"' in line for line in lines) >= k
                   for n, k in counts.items())

    return check


def test_text_log_lines_have_the_fields_in_a_fixed_order(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "text")
    try:
        _session(proc)
        lines = _wait_for(proc, _has_events(accepted=1, login_failed=2))
    finally:
        proc.stop()
    logged = [line for line in lines if line.startswith("ts=")]
    events = [parse_line(line) for line in logged]  # every log line parses
    print("\n".join(logged))
    for fields in events:
        assert [k for k, _ in fields[:4]] == ["ts", "level", "logger", "event"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields[0][1])
    by_event: dict[str, list[list[tuple[str, str]]]] = {}
    for fields in events:
        by_event.setdefault(fields[3][1], []).append(fields)
    # one "listening" line per service, the web port among them
    listening = {dict(f)["proto"] for f in by_event["listening"]}
    assert {"smtp", "imap", "pop3", "http", "metrics"} <= listening
    (accepted,) = by_event["accepted"]
    assert [k for k, _ in accepted] == [
        "ts", "level", "logger", "event", "proto", "ip", "msgid", "from", "to", "size", "delivered", "queued",
    ]
    values = dict(accepted)
    assert (values["proto"], values["ip"], values["from"], values["to"]) == (
        "smtp", "127.0.0.1", "sender@remote.test", ALICE)
    assert (values["delivered"], values["queued"]) == ("1", "0")
    assert re.fullmatch(r"[0-9a-f]{16}", values["msgid"])
    failed = by_event["login_failed"]
    assert sorted(dict(f)["proto"] for f in failed) == ["imap", "pop3"]
    for f in failed:
        assert [k for k, _ in f] == ["ts", "level", "logger", "event", "proto", "ip", "user", "reason"]
        assert dict(f)["level"] == "warning" and dict(f)["ip"] == "127.0.0.1" and dict(f)["user"] == ALICE
    assert "relay=None" not in "\n".join(lines)


def test_json_log_lines_carry_the_same_fields(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "json")
    try:
        _session(proc)
        lines = _wait_for(proc, _has_events(accepted=1, login_failed=2))
    finally:
        proc.stop()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    assert objects
    for obj in objects:
        assert list(obj)[:4] == ["ts", "level", "logger", "event"]
    (accepted,) = [o for o in objects if o["event"] == "accepted"]
    assert list(accepted) == [
        "ts", "level", "logger", "event", "proto", "ip", "msgid", "from", "to", "size", "delivered", "queued",
    ]
    assert accepted["size"] > 0 and accepted["to"] == ALICE
    failed = [o for o in objects if o["event"] == "login_failed"]
    assert sorted(o["proto"] for o in failed) == ["imap", "pop3"]
    assert all(list(o) == ["ts", "level", "logger", "event", "proto", "ip", "user", "reason"] for o in failed)


def test_values_cannot_forge_fields_or_break_the_line() -> None:
    assert render_value("alice@example.test") == "alice@example.test"
    assert render_value("x ip=10.0.0.1") == '"x ip=10.0.0.1"'
    assert render_value('a"b\r\nevent=login') == '"a\\"b\\r\\nevent=login"'
    assert render_value("") == '""'
    assert render_value("caf\u00e9") == '"caf\\u00e9"'


def test_queue_ids_are_unique_when_a_row_id_comes_back(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite hands out the row id of a deleted last row again (and every
    restart starts from the table's rows): the id in the log must not."""
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.queue")
    queue = server.server.queue
    assert queue is not None

    async def enqueue() -> int:
        queue_id = await queue.enqueue(b"Subject: x\r\n\r\nbody\r\n", ALICE, ["someone@remote.test"])
        assert queue_id is not None
        with contextlib.suppress(NotFound):  # the runner may have finished with it already (no such domain)
            await server.store.queue_delete(queue_id)
        return queue_id

    first, second = server.call(enqueue()), server.call(enqueue())
    assert first == second  # the same row id, twice
    queued = [dict(r.msg.ordered()) for r in caplog.records if str(r.msg).startswith("queued ")]
    assert len(queued) == 2, [r.getMessage() for r in caplog.records]
    assert queued[0]["queue_id"] != queued[1]["queue_id"], queued


def test_no_asyncio_warning_when_a_tls_client_closes(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that ends TLS with close_notify before closing its socket
    (RFC 8446 6.1) made asyncio warn "returning true from eof_received()
    has no effect when using ssl" once per connection."""
    server = make_server()
    caplog.set_level(logging.WARNING)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for service in ("imaps", "pop3s", "smtps"):
        raw = socket.create_connection((server.host, server.port(service)), timeout=10)
        tls = ctx.wrap_socket(raw)
        tls.recv(4096)  # the greeting
        plain = tls.unwrap()  # sends close_notify
        plain.close()
    listeners = server.server.listeners
    wait_until(lambda: not any(listeners[s].active for s in ("imaps", "pop3s", "smtps")),
               what="the server to let the connections go")
    warnings = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert warnings == [], warnings


def test_login_events_name_the_listener(make_server: Callable[..., RunningServer],
                                        caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.auth")
    with smtplib.SMTP(server.host, server.port("submission"), timeout=30) as s:
        s.starttls(context=_insecure())
        s.login(ALICE, USERS[ALICE])
    events = [str(r.msg) for r in caplog.records if str(r.msg).startswith("login ")]
    assert events == [f"login proto=submission ip=127.0.0.1 tls=yes user={ALICE}"], events


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_a_failed_remote_delivery_names_no_relay_it_never_reached(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """No MX answered (here: the domain does not resolve): the outcome line
    has no ``relay`` field rather than ``relay=None``."""
    server = make_server()
    caplog.set_level(logging.INFO, logger="mailyard.queue")
    queue = server.server.queue
    assert queue is not None
    server.call(queue.enqueue(b"Subject: x\r\n\r\nbody\r\n", ALICE, ["someone@nowhere.invalid"]))
    outcomes = wait_until(
        lambda: [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith(("bounced ", "deferred ", "expired "))],
        timeout=60, what=lambda: str([r.getMessage() for r in caplog.records]))
    print(outcomes)
    assert "to=someone@nowhere.invalid" in outcomes[0]
    assert "relay=" not in outcomes[0] and "None" not in outcomes[0], outcomes


def test_a_webmail_send_is_logged_like_a_submission(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.test_web_http import csrf, login

    server = make_server()
    caplog.set_level(logging.INFO)
    client = login(server)
    r = client.post("/compose", data={"csrf": csrf(client), "to": "bob@example.test", "cc": "", "bcc": "",
                                      "subject": "via web", "body": "hello", "action": "send"})
    assert r.status_code == 303, r.text
    accepted = [r.msg for r in caplog.records if str(r.msg).startswith("accepted ")]
    assert len(accepted) == 1, [r.getMessage() for r in caplog.records]
    fields = dict(accepted[0].ordered())
    assert [k for k, _ in accepted[0].ordered()] == [
        "proto", "ip", "user", "msgid", "from", "to", "size", "delivered", "queued"]
    assert (fields["proto"], fields["ip"], fields["user"], fields["to"], fields["delivered"], fields["queued"]) == (
        "web", "127.0.0.1", ALICE, ["bob@example.test"], 1, 0)
    logins = [str(r.msg) for r in caplog.records if str(r.msg).startswith("login ")]
    assert logins == [f"login proto=web ip=127.0.0.1 tls=no user={ALICE}"]
