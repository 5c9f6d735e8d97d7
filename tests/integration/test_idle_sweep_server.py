"""A server stopped while clients are still connected is freed: the shared
idle-timeout sweep (net/timers.py `IdleSweep`) must not hold its event loop
(with the sessions, transports and buffers it reaches) for the rest of the
process. Runs on the production loop (uvloop) when it is installed."""

from __future__ import annotations

import gc
import math
import socket
import weakref
from collections.abc import Callable
from pathlib import Path

from mailyard.config import Config
from tests.conftest import HOST, RunningServer, make_test_config


def test_a_server_stopped_with_clients_connected_is_freed(tmp_path: Path) -> None:
    rs = RunningServer(tmp_path / "data", make_test_config())
    rs.start()
    clients = []
    try:
        for _ in range(3):
            c = socket.create_connection((HOST, rs.port("imap")), timeout=10)
            assert c.recv(1000).startswith(b"* OK")  # the session is open, its idle check waiting
            clients.append(c)
        rs.stop()  # the clients are still connected
        loop = weakref.ref(rs.loop)
        del rs
        gc.collect()
        assert loop() is None, "the stopped server's event loop is still held"
    finally:
        for c in clients:
            c.close()


def test_an_infinite_idle_timeout_serves_the_clients(make_server: Callable[..., RunningServer]) -> None:
    # TOML has ``inf``, and the configuration takes it as "never time out".
    def configure(cfg: Config) -> None:
        cfg.limits.idle_timeout = math.inf
        cfg.limits.imap_idle_timeout = math.inf

    server = make_server(configure=configure)
    with socket.create_connection((HOST, server.port("imap")), timeout=10) as c:
        assert c.recv(1000).startswith(b"* OK")
        c.sendall(b"a1 NOOP\r\n")
        assert c.recv(1000) == b"a1 OK NOOP completed\r\n"
