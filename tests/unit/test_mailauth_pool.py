"""mailauth/pool.py: the inbound checks in worker processes give the same
verdict as in the server process, keep the server's CPU per message low,
and fall back or restart when a worker dies, hangs, or the message is large."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from mailyard.mailauth import dkim, keys
from mailyard.mailauth.arc import ARCResult
from mailyard.mailauth.dkim import DKIMResult
from mailyard.mailauth.dmarc import DMARCResult
from mailyard.mailauth.dnscache import Resolver
from mailyard.mailauth.inbound import InboundVerdict, check_message
from mailyard.mailauth.pool import CheckPool, _pack, _unpack
from mailyard.mailauth.spf import SPFResult
from tests.integration.multihost import DNSServer

IP = "192.0.2.10"
MESSAGE = (
    b"From: News <news@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: pooled\r\n"
    b"Date: Sat, 05 Dec 2026 08:00:00 +0000\r\n"
    b"Message-ID: <pool1@remote.test>\r\n"
    b"\r\n"
    b"Checked in another process.\r\n"
)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    server = DNSServer()
    yield server
    server.stop()


@pytest.fixture
def signed(tmp_path: Path, dns: DNSServer) -> bytes:
    keys.generate(tmp_path, "remote.test")
    loaded = keys.load(tmp_path, "remote.test")
    assert loaded is not None
    for rec in keys.records(loaded):
        dns.add(rec.name, "TXT", keys.txt_zone_value(rec.text))
    dns.add("remote.test", "TXT", f'"v=spf1 ip4:{IP} -all"')
    dns.add("_dmarc.remote.test", "TXT", '"v=DMARC1; p=reject"')
    return dkim.sign(MESSAGE, loaded) + MESSAGE


def run(coro):  # noqa: ANN001, ANN201 - a test helper
    """On the production event loop: ``mailyard serve`` runs uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def check(pool: CheckPool, message: bytes):  # noqa: ANN201
    return pool.check(message, ip=IP, helo="mx.remote.test", reverse_path="news@remote.test")


def test_same_verdict_as_in_process_and_forged_field_removed(dns: DNSServer, signed: bytes) -> None:
    forged = b"Authentication-Results: mx.example.test; dkim=pass; dmarc=pass\r\n"
    expected = check_message(Resolver(dns.address, 3.0), forged + signed, authserv_id="mx.example.test", ip=IP,
                             helo="mx.remote.test", reverse_path="news@remote.test")

    async def go() -> None:
        pool = CheckPool(dns.address, 3.0, "mx.example.test")
        try:
            await pool.start()
            got = await check(pool, forged + signed)
            plain = await check(pool, signed)
            assert got.header == expected.header and b"dmarc=pass" in got.header
            assert got.message == signed == expected.message  # the forged field is gone
            assert plain.message is signed  # unchanged: not sent back, the server's own copy
            assert (got.spf, got.dkim, got.dmarc, got.arc) == (expected.spf, expected.dkim, expected.dmarc,
                                                                 expected.arc)
            assert pool.stats == {"process": 2, "thread": 0, "restarts": 0}
        finally:
            pool.close()

    run(go())


def test_the_reply_carries_everything_callers_read(dns: DNSServer, signed: bytes) -> None:
    """The verdict crosses the socket as plain values (``_pack``, ``_unpack``):
    each field must arrive equal to the in-process verdict's, for a message
    that passes and for one its DMARC policy rejects (the SMTP layer reads
    the field, the message, the disposition and DMARC's reason and From
    domain; greylisting and the spam checker SPF's and each signature's
    result and domain; the aggregate reports the DMARC record's tags)."""
    dns.remove("_dmarc.remote.test", "TXT")
    dns.add("_dmarc.remote.test", "TXT", '"v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:d@remote.test"')
    cases = [(signed, IP), (MESSAGE, "198.51.100.7")]  # signed from an allowed IP; unsigned from another

    async def go() -> None:
        pool = CheckPool(dns.address, 3.0, "mx.example.test")
        resolver = Resolver(dns.address, 3.0)
        try:
            await pool.start()
            verdicts = []
            for message, ip in cases:
                expected = check_message(resolver, message, authserv_id="mx.example.test", ip=ip,
                                         helo="mx.remote.test", reverse_path="news@remote.test")
                got = await pool.check(message, ip=ip, helo="mx.remote.test", reverse_path="news@remote.test")
                assert got == expected  # every field, the nested results' too
                assert (got.spf, got.helo, got.dkim, got.arc) == (expected.spf, expected.helo, expected.dkim,
                                                                   expected.arc)
                assert got.dmarc == expected.dmarc and got.dmarc is not None and expected.dmarc is not None
                assert got.dmarc.published == expected.dmarc.published
                assert got.dmarc.published is not None and got.dmarc.published.rua == "mailto:d@remote.test"
                verdicts.append(got)
            passed, refused = verdicts
            assert (passed.disposition, passed.spf.result, [r.result for r in passed.dkim]) == (
                "none", "pass", ["pass"])
            assert (refused.disposition, refused.dmarc.result, refused.spf.result, refused.dkim) == (
                "reject", "fail", "fail", [])
            assert pool.stats["process"] == 2
        finally:
            pool.close()

    run(go())


def test_the_reply_codec_keeps_absent_results() -> None:
    """``_pack``/``_unpack`` carry a verdict without DMARC, ARC, signatures
    or a DMARC record as it is, and every field of ``InboundVerdict`` (a
    field added there must be added to the codec too)."""
    spf = SPFResult("pass", "mailfrom", "remote.test", "news@remote.test", "ok")
    helo = SPFResult("none", "helo", "mx.remote.test", "postmaster@mx.remote.test")
    no_record = DMARCResult("none", "remote.test", "none", "none", "no policy")
    for verdict in (InboundVerdict(b"", b"Authentication-Results: x; dkim=none\r\n", spf, helo),
                    InboundVerdict(b"m", b"h", spf, helo, [DKIMResult("fail", "d.test", "s", "rsa-sha256", "bad", "Ab")],
                                   no_record, ARCResult("fail", "i=2", 2))):
        packed = _pack(verdict)
        assert len(packed) == len(fields(InboundVerdict))
        assert _unpack(pickle.loads(pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL))) == verdict


def test_dead_worker_falls_back_then_restarts(dns: DNSServer, signed: bytes) -> None:
    async def go() -> None:
        pool = CheckPool(dns.address, 3.0, "mx.example.test")
        try:
            await pool.start()
            first = await check(pool, signed)
            (worker,) = pool._workers
            os.kill(worker.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while worker.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # poll: the read side sees the end
            assert not worker.alive
            again = await check(pool, signed)  # a new worker answers
            assert again.header == first.header
            assert pool.stats["restarts"] == 1 and pool.stats["process"] == 2
            assert pool._workers[0] is not worker and pool._workers[0].process.is_alive()
        finally:
            pool.close()

    run(go())


def test_large_message_is_checked_on_threads(dns: DNSServer, signed: bytes) -> None:
    async def go() -> None:
        pool = CheckPool(dns.address, 3.0, "mx.example.test", process_max=len(signed) - 1)
        try:
            verdict = await check(pool, signed)
            assert b"dkim=pass" in verdict.header
            assert pool.stats == {"process": 0, "thread": 1, "restarts": 0}
            assert pool._workers == []  # no process was needed
        finally:
            pool.close()

    run(go())


def test_a_hung_check_times_out_and_its_worker_is_replaced(signed: bytes) -> None:
    """DNS that never answers, a task bound shorter than the DNS timeout: the
    check fails with TimeoutError (the SMTP layer accepts without a verdict),
    the worker is stopped and the next check gets a new one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"

        async def go() -> None:
            pool = CheckPool(address, 30.0, "mx.example.test", task_timeout=1.0)
            try:
                await pool.start()
                (worker,) = pool._workers
                with pytest.raises(TimeoutError):
                    await check(pool, signed)
                assert not worker.alive
                deadline = time.monotonic() + 10
                while worker.process.is_alive() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert not worker.process.is_alive()
                with pytest.raises(TimeoutError):
                    await check(pool, signed)
                assert pool.stats["restarts"] == 1
            finally:
                pool.close()

        run(go())
