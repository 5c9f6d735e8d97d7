"""The accept loop of an implicit-TLS port counts each connection in before
its handshake (net/accept.py): a connection it cannot make a session for,
or that the caps refuse once its session is made, is closed at once and
holds no slot."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

import pytest

from mailyard.net.accept import Acceptor
from mailyard.net.conncaps import ConnectionCaps
from tests.waiting import wait_until_async

TIMEOUT = 10.0  # bounds a failure, not a figure


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


def _tls() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # (no handshake gets far enough to need a certificate)


async def _closed_without_a_word(port: int) -> bool:
    """Whether a client connecting to ``port`` is closed with nothing sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


def test_a_connection_no_session_can_be_made_for_is_closed_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session factory that fails (a bug, a library that changed) costs
    that connection only: it is closed, its slot is not held, the error is
    logged, and the next connection is served."""
    caps = ConnectionCaps(max_connections=10, max_per_ip=10)
    made: list[asyncio.Protocol] = []

    def factory(_source: Any) -> asyncio.Protocol:
        if not made:
            made.append(asyncio.Protocol())
            raise TypeError("unexpected keyword argument")
        made.append(asyncio.Protocol())
        return made[-1]

    async def go() -> None:
        listening = _listening()
        acceptor = Acceptor(listening, factory, _tls, "imaps", caps=caps)
        acceptor.start()
        try:
            assert await _closed_without_a_word(listening.getsockname()[1])
            assert caps.active == 0
            _, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
            await wait_until_async(lambda: caps.active == 1, TIMEOUT, "the next connection counted in")
            writer.close()
        finally:
            acceptor.close()
            listening.close()

    caplog.set_level(logging.ERROR, logger="mailyard.net")
    asyncio.run(go())
    failures = [r for r in caplog.records if "no session could be made" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None, caplog.records


class _RefusedAtAdmission:
    """Caps with room at the first look that are full by the time the session
    is made (the factory ran in between)."""

    def refusal(self, ip: str) -> str | None:
        return None

    def admit(self, connection: Any, ip: str) -> str | None:
        return "too many connections"

    def release(self, connection: Any) -> None:
        pass


def test_a_connection_the_caps_refuse_at_its_admission_is_closed_before_tls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caps = _RefusedAtAdmission()

    async def go() -> None:
        listening = _listening()
        acceptor = Acceptor(listening, lambda _source: asyncio.Protocol(), _tls, "pop3s", caps=caps)
        acceptor.start()
        try:
            assert await _closed_without_a_word(listening.getsockname()[1])
        finally:
            acceptor.close()
            listening.close()

    caplog.set_level(logging.WARNING, logger="mailyard.net")
    asyncio.run(go())
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection_refused ")]
    assert len(refusals) == 1 and "proto=pop3s " in refusals[0], refusals
