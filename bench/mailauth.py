"""Mail authentication costs.

- DKIM signing per message (both signatures, rsa-sha256 2048 and
  ed25519-sha256, relaxed/relaxed), 1 KB and 100 KB, in process: what the
  outbound queue spends once per message at enqueue.
- MX accept throughput with the inbound checks (SPF for MAIL FROM and HELO,
  DKIM of two signatures, DMARC, Authentication-Results) on against off, on
  a real ``mailyard serve``, DNS answered by the project's DNS test server on
  loopback (tests/integration/multihost.py), 20 concurrent clients, 1 KB
  messages, fsync on. The issue's target: at most 15 % lower.
- Outbound throughput with DKIM signing on against off: 20 authenticated
  clients submit 1 KB messages to a remote domain on the submission port of
  a real ``mailyard serve`` (``[authentication] dkim_sign`` true or false),
  each accepted once it is in the outbound queue, signed when signing is on
  (the queue signs at enqueue, never per attempt). The remote domain's MX
  refuses connections, so each message's first attempt is deferred, alike
  for both servers. The issue's target: at most 10 % lower.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .common import USERS, BenchServer, Result, progress, smtp_client
from .imap_load import settle, tree_cpu

SESSIONS = 20
ROUNDS = 3


def _settle(servers: dict[bool, BenchServer]) -> None:
    """Wait until both servers are idle (imap_load.settle): a round just
    measured leaves work behind (worker 0 indexes the bodies it stored),
    which would run during the other server's round and count against it."""
    asyncio.run(settle([server.pid for server in servers.values()]))


def _message(size: int, sender: str = "news@remote.test") -> bytes:
    head = (f"From: News <{sender}>\r\nTo: alice@example.test\r\nSubject: load\r\n"
            "Date: Sat, 05 Dec 2026 08:00:00 +0000\r\nMessage-ID: <load@remote.test>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _signing(quick: bool) -> list[Result]:
    from mailyard.mailauth import dkim, keys

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        keys.generate(Path(tmp), "remote.test")
        signing = keys.load(Path(tmp), "remote.test")
        assert signing is not None
        for size, count in ((1024, 100 if quick else 500), (100 * 1024, 50 if quick else 200)):
            msg = _message(size)
            dkim.sign(msg, signing)
            start = time.perf_counter()
            for _ in range(count):
                dkim.sign(msg, signing)
            ms = (time.perf_counter() - start) / count * 1000
            progress(f"signing {size // 1024} KB: {ms:.2f} ms per message")
            results.append(Result("mailauth", f"DKIM sign {size // 1024} KB (rsa+ed25519)", ms, "ms/msg",
                                  "once per message at enqueue", {"messages": count}))
    return results


async def _transaction(writer: asyncio.StreamWriter, reply: Callable[[], Awaitable[bytes]], sender: str, rcpt: str,
                       body: bytes, then: bytes = b"") -> None:
    """MAIL, RCPT and DATA pipelined (RFC 2920), then ``body``, its end and
    ``then``; the message must be answered 250."""
    writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    for _ in range(3):
        await reply()
    writer.write(body + b".\r\n" + then)
    answer = await reply()
    assert answer.startswith(b"250"), answer


async def _source(port: int, count: int, body: bytes) -> float:
    left = count

    async def one() -> None:
        writer, reply = await smtp_client(port, "mx.remote.test")
        await _transaction(writer, reply, "news@remote.test", "alice@example.test", body, then=b"QUIT\r\n")
        await reply()
        writer.close()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
    return time.perf_counter() - start


def _published(dns: object, ip: str) -> bytes:
    """A 1 KB message from remote.test signed with both its keys, and that
    domain's records (both DKIM keys, SPF allowing ``ip``, DMARC p=reject)
    on the bench's DNS server."""
    from mailyard.mailauth import dkim

    with tempfile.TemporaryDirectory() as tmp:
        signing = dns.publish_dkim(Path(tmp), "remote.test")  # type: ignore[attr-defined]
        msg = _message(1024)
        body = dkim.sign(msg, signing) + msg
    dns.add("remote.test", "TXT", f'"v=spf1 ip4:{ip} -all"')  # type: ignore[attr-defined]
    dns.add("_dmarc.remote.test", "TXT", '"v=DMARC1; p=reject"')  # type: ignore[attr-defined]
    return body


def _accept(quick: bool) -> list[Result]:
    from tests.integration.multihost import DNSServer

    from .smtp import _count

    dns = DNSServer()
    count = 300 if quick else 2000
    try:
        body = _published(dns, "127.0.0.1")
        dns.add("mx.remote.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
        servers = _two_servers("smtp", dns.address, "inbound_checks")
        try:
            def measure(server: BenchServer) -> tuple[float, float]:
                before = tree_cpu(server.pid)
                elapsed = asyncio.run(_source(server.ports["smtp"], count, body))
                return elapsed, tree_cpu(server.pid) - before

            best, per_msg = _alternate(servers, count, f"{count} signed messages of 1 KB, {SESSIONS} clients, checks",
                                       measure)
            for server in servers.values():
                stored = _count(server)
                if stored != count * ROUNDS:
                    raise RuntimeError(f"{count * ROUNDS} messages sent but {stored} stored")
        finally:
            for server in servers.values():
                server.stop()
    finally:
        dns.stop()
    return _compared(best, per_msg, count, 15, (
        ("MX accept 1 KB, checks off", ""), ("MX accept 1 KB, SPF+DKIM+DMARC on", "at most 15 % lower than off"),
        "MX accept, cost of the checks", "MX server CPU per message, checks off",
        "MX server CPU per message, checks on"))


def _two_servers(service: str, nameserver: str, switch: str,
                 prepare: Callable[[BenchServer], None] | None = None) -> dict[bool, BenchServer]:
    """The two servers compared, started: ``switch`` false and true, both
    asking the bench's DNS server. They run side by side and the rounds
    alternate (``_alternate``): on a shared machine the other load then hits
    both alike."""
    servers: dict[bool, BenchServer] = {}
    try:
        for on in (False, True):
            server = servers[on] = BenchServer((service,))
            server.setup()
            server.set(nameservers=f'"{nameserver}"', **{switch: "true" if on else "false"})
            if prepare is not None:
                prepare(server)
            server.start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def _alternate(servers: dict[bool, BenchServer], count: int, what: str,
               measure: Callable[[BenchServer], tuple[float, float]]) -> tuple[dict[bool, float], dict[bool, float]]:
    """``ROUNDS`` rounds of ``count`` messages on each server in turn, each
    round from idle servers (``_settle``); ``measure`` gives a round's
    seconds and server CPU seconds. Returns the best msgs/s of each server
    and its server CPU per message over all rounds (ms)."""
    best = {False: 0.0, True: 0.0}
    cpu = {False: 0.0, True: 0.0}
    for round_ in range(ROUNDS):
        for on in (False, True):
            _settle(servers)
            progress(f"round {round_ + 1}: {what} {'on' if on else 'off'}")
            elapsed, used = measure(servers[on])
            cpu[on] += used
            best[on] = max(best[on], count / elapsed)
            progress(f"{count / elapsed:.0f} msgs/s, server CPU {used / count * 1000:.3f} ms/msg")
    per_msg = {on: cpu[on] / (count * ROUNDS) * 1000 for on in (False, True)}
    progress(f"server CPU per message: off {per_msg[False]:.3f} ms, on {per_msg[True]:.3f} ms "
             f"(+{per_msg[True] - per_msg[False]:.3f} ms, {(per_msg[True] / per_msg[False] - 1) * 100:.0f} %)")
    return best, per_msg


def _compared(best: dict[bool, float], per_msg: dict[bool, float], count: int, target: int,
              names: tuple[tuple[str, str], tuple[str, str], str, str, str]) -> list[Result]:
    """The figures of an on/off comparison: each side's msgs/s (name,
    reference), how much lower on is, each side's server CPU per message."""
    (off_name, off_ref), (on_name, on_ref), lower_name, off_cpu, on_cpu = names
    lower = (1 - best[True] / best[False]) * 100
    rounds = {"messages": count * ROUNDS}
    return [
        Result("mailauth", off_name, best[False], "msgs/s", off_ref, {"messages": count}),
        Result("mailauth", on_name, best[True], "msgs/s", on_ref, {"messages": count}),
        Result("mailauth", lower_name, lower, "% lower", f"target <= {target}"),
        Result("mailauth", off_cpu, per_msg[False], "ms/msg", "from /proc, all rounds", rounds),
        Result("mailauth", on_cpu, per_msg[True], "ms/msg", "from /proc, all rounds", rounds),
    ]


def _pool_cost(quick: bool) -> list[Result]:
    """The server process's CPU per check with the checks in the worker
    process (mailauth/pool.py: the server only frames and unpickles) and
    in process (mailauth/inbound.py), for a 1 KB message with two
    signatures whose DNS answers are cached."""
    from tests.integration.multihost import DNSServer

    from mailyard.mailauth.dnscache import Resolver
    from mailyard.mailauth.inbound import check_message
    from mailyard.mailauth.pool import CheckPool

    ip, helo, sender = "192.0.2.10", "mx.remote.test", "news@remote.test"
    count = 100 if quick else 300
    dns = DNSServer()
    try:
        body = _published(dns, ip)
        progress(f"server CPU per check: {count} checks in the worker process, then in process")

        async def pooled() -> float:
            pool = CheckPool(dns.address, 3.0, "mx.example.test", threads=4)
            try:
                await pool.check(body, ip=ip, helo=helo, reverse_path=sender)  # worker up, cache warm
                start = time.process_time()

                async def client(n: int) -> None:
                    for _ in range(n):
                        await pool.check(body, ip=ip, helo=helo, reverse_path=sender)

                await asyncio.gather(*(client(count // 10) for _ in range(10)))
                return (time.process_time() - start) / count * 1000
            finally:
                pool.close()

        in_pool = asyncio.run(pooled())
        resolver = Resolver(dns.address, 3.0)
        check_message(resolver, body, authserv_id="mx.example.test", ip=ip, helo=helo, reverse_path=sender)
        start = time.process_time()
        for _ in range(count):
            check_message(resolver, body, authserv_id="mx.example.test", ip=ip, helo=helo, reverse_path=sender)
        inline = (time.process_time() - start) / count * 1000
    finally:
        dns.stop()
    return [
        Result("mailauth", "check: server CPU with the worker process", in_pool, "ms/check",
               "the server frames and unpickles; the worker checks"),
        Result("mailauth", "check: CPU in process", inline, "ms/check", "1 KB, two signatures, DNS cached"),
    ]


async def _submit(port: int, count: int, pid: int, sessions: int = SESSIONS) -> tuple[float, float]:
    """(seconds, server CPU seconds) for ``sessions`` authenticated
    clients, each on one connection, to submit ``count`` messages of 1 KB
    from alice to a remote recipient, every one answered 250. The clock and
    the CPU count start once every client has logged in (argon2id, a cost
    per connection, not per message)."""
    body = _message(1024, "alice@example.test").replace(b"To: alice@example.test", b"To: carol@remote.test")
    plain = base64.b64encode(b"\0alice@example.test\0" + USERS["alice@example.test"].encode())
    left = count
    go = asyncio.Event()

    async def session() -> None:
        nonlocal left
        writer, reply = await smtp_client(port, "client.example.test")
        writer.write(b"AUTH PLAIN " + plain + b"\r\n")
        answer = await reply()
        assert answer.startswith(b"235"), answer
        ready.append(None)
        if len(ready) == sessions:
            logged_in.set()
        await go.wait()
        while left > 0:
            left -= 1
            await _transaction(writer, reply, "alice@example.test", "carol@remote.test", body)
        writer.write(b"QUIT\r\n")
        await reply()
        writer.close()

    ready: list[None] = []
    logged_in = asyncio.Event()
    tasks = [asyncio.ensure_future(session()) for _ in range(sessions)]
    waiter = asyncio.ensure_future(logged_in.wait())
    done, _pending = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter:
            task.result()  # a session that ended before the start: say why
    # (each 235 came after its password check: the logins' argon2 work is over)
    cpu0, start = tree_cpu(pid), time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - start, tree_cpu(pid) - cpu0


def _outbound(quick: bool) -> list[Result]:
    from tests.integration.multihost import DNSServer

    dns = DNSServer()
    count = 300 if quick else 2000

    def prepare(server: BenchServer) -> None:
        server.set(retry_initial="3600.0")
        # the account's submission budgets (an abuse defence) would stop the run: none for alice
        server.mailyard("user", "limits", "alice@example.test", "--messages-per-hour", "0",
                        "--recipients-per-day", "0")

    try:
        # the remote domain's MX refuses connections: each first attempt is deferred
        dns.add("remote.test", "MX", "10 mx.remote.test.")
        dns.add("mx.remote.test", "A", "127.0.0.9")
        servers = _two_servers("submission", dns.address, "dkim_sign", prepare)
        try:
            best, per_msg = _alternate(
                servers, count, f"{count} submitted messages of 1 KB to a remote domain, {SESSIONS} clients, signing",
                lambda server: asyncio.run(_submit(server.ports["submission"], count, server.pid)))
        finally:
            for server in servers.values():
                server.stop()
    finally:
        dns.stop()
    return _compared(best, per_msg, count, 10, (
        ("outbound submit 1 KB, signing off", "queued for a remote domain"),
        ("outbound submit 1 KB, rsa+ed25519 signing on", "at most 10 % lower than off"),
        "outbound, cost of signing", "outbound server CPU per message, signing off",
        "outbound server CPU per message, signing on"))


def run(quick: bool = False) -> list[Result]:
    return _signing(quick) + _pool_cost(quick) + _accept(quick) + _outbound(quick)
