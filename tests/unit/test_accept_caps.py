"""The accept loop of an implicit-TLS port counts each connection in before
its handshake (net/accept.py): a connection it cannot make a session for,
or that the caps refuse once its session is made, is closed at once and
holds no slot; one whose session greeted keeps its slot until the session
ends, even when a stop cancels the accept task right after the greeting."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from mailyard.net import tls
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

    def withdraw(self, connection: Any) -> None:
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


def test_a_stop_right_after_the_greeting_leaves_the_slot_to_the_session(tmp_path: Path) -> None:
    """The handshake is done and the session admitted itself and greeted,
    but the accept loop is closed (a server stop) before its task resumes:
    the task is cancelled, and the slot stays counted until the session's
    own end (Listener.stop waits on the count, then aborts whom it holds)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.create_self_signed("localhost", cert, key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    caps = ConnectionCaps(max_connections=10, max_per_ip=10)
    counted_at_its_end: list[int] = []
    acceptor: Acceptor

    class Session(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert caps.admit(self, "127.0.0.1") is None  # (counted in at accept: the slot is claimed)
            transport.write(b"* OK ready\r\n")  # type: ignore[attr-defined]
            acceptor.close()  # the stop, before the accept task resumes

        def connection_lost(self, exc: Exception | None) -> None:
            counted_at_its_end.append(caps.active)
            caps.release(self)

    async def go() -> None:
        nonlocal acceptor
        listening = _listening()
        acceptor = Acceptor(listening, lambda _source: Session(), lambda: server_ctx, "imaps", caps=caps)
        acceptor.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1],
                                                           ssl=client_ctx)
            assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"* OK ready\r\n"
            writer.close()
            await wait_until_async(lambda: counted_at_its_end, TIMEOUT, "the session to end")
        finally:
            acceptor.close()
            listening.close()

    asyncio.run(go())
    # (the cancelled accept task ends before asyncio tells the session its
    # transport is lost): the session's slot was counted until its own end
    assert counted_at_its_end == [1]
    assert caps.active == 0
