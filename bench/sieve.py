"""Sieve at local delivery: what a user's filter costs.

- local deliveries per second through the acceptance path
  (delivery/submit.py ``accept_message``, the one every port uses) to an
  account without a script, and to one whose active script has 50 rules
  (header / address / size tests, the last rule files the message into a
  folder), over the SQLite store with fsync off (the figure is the
  CPU cost, not the disk's);
- the compile time of a 500-rule script (what PUTSCRIPT / ``mailyard sieve
  put`` and the first delivery after a change pay).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import Result, progress

DELIVERIES = 2_000

MESSAGE = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: status report %d\r\n"
           b"Message-ID: <m%d@remote.test>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\n" + b"body line\r\n" * 40)


def rules(n: int) -> str:
    """A script of ``n`` rules like the ones users write; the last one matches."""
    out = ['require ["fileinto", "mailbox", "imap4flags"];']
    kinds = [
        'if header :contains "subject" "newsletter-{i}" {{ fileinto "News{i}"; stop; }}',
        'if address :is "from" "sender{i}@remote.test" {{ fileinto "People"; stop; }}',
        'if address :domain :is "from" "domain{i}.test" {{ discard; stop; }}',
        'if allof (header :matches "subject" "*[list{i}]*", size :over 100K) {{ addflag "big"; }}',
        'if header :is "x-mailer" "mailer {i}" {{ fileinto :create "Mailers"; }}',
    ]
    for i in range(n - 1):
        out.append(kinds[i % len(kinds)].format(i=i))
    out.append('if header :contains "subject" "report" { fileinto :create "Reports"; }')
    return "\n".join(out) + "\n"


def run(quick: bool = False) -> list[Result]:
    from mailyard.config import Config, StoreConfig
    from mailyard.delivery.router import Router
    from mailyard.delivery.sieve import ScriptStore, SieveDelivery
    from mailyard.delivery.submit import Trace, accept_message
    from mailyard.sieve import compile_script
    from mailyard.store.sqlite import SQLiteStore

    deliveries = 300 if quick else DELIVERIES
    results: list[Result] = []

    @dataclass
    class Intake:
        config: Config
        store: Any
        router: Router
        queue: Any
        sieve: SieveDelivery | None

    async def go(place: Path) -> None:
        store = SQLiteStore(place, StoreConfig(fsync=False))
        try:
            await store.add_domain("example.test")
            plain = await store.add_account("plain@example.test", "h")
            filtered = await store.add_account("filtered@example.test", "h")
            scripts = ScriptStore(place / "sieve")
            scripts.put(filtered.id, "main", rules(50))
            scripts.activate(filtered.id, "main")
            # a script installed a while ago, as a user's is: ScriptStore
            # trusts its one-stat cache only for a directory changed more than
            # two seconds before (a second change in the same clock tick would
            # not show), which a script put just now is not
            past = time.time() - 60
            os.utime(scripts.dir(filtered.id), (past, past))
            router = Router(store)
            intake = Intake(Config(), store, router, None, SieveDelivery(store, scripts))

            cpu: dict[int, list[float]] = {plain.id: [], filtered.id: []}

            async def rate(account: Any) -> float:
                started, cpu_started = time.perf_counter(), time.process_time()
                for i in range(deliveries):
                    await accept_message(intake, MESSAGE % (i, i), "carol@remote.test", [account], [],
                                         trace=Trace("ESMTP", id="bench"))
                # the process's CPU time (every thread: the store's writer too), which
                # the other load of a shared machine disturbs less than the clock
                cpu[account.id].append(deliveries / (time.process_time() - cpu_started))
                return deliveries / (time.perf_counter() - started)

            await rate(plain)  # warm up
            # interleaved rounds, the best of each: on a shared machine the
            # other load hits both sides alike instead of one
            nones, fifties = [], []
            for _ in range(3):
                nones.append(await rate(plain))
                fifties.append(await rate(filtered))
            none, fifty = max(nones), max(fifties)
            box = await store.get_mailbox(filtered.id, "Reports")
            assert box is not None and len(await store.list_messages(box)) == 3 * deliveries
            progress(f"no script {none:.0f}/s, 50 rules {fifty:.0f}/s")
            results.append(Result("sieve", "local deliveries/s, no script", none, "msg/s", "fsync off"))
            results.append(Result("sieve", "local deliveries/s, 50-rule script", fifty, "msg/s",
                                  f"{100 * fifty / none:.0f} % of no script (the issue asks >= 80 %)"))
            cpu_none, cpu_fifty = max(cpu[plain.id]), max(cpu[filtered.id])
            results.append(Result("sieve", "deliveries per CPU second, 50-rule script", cpu_fifty, "msg/s",
                                  f"{100 * cpu_fifty / cpu_none:.0f} % of no script's {cpu_none:.0f}"))
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(prefix="mailyard-bench-sieve-") as tmp:
        asyncio.run(go(Path(tmp) / "data"))
    text = rules(500)
    times = []
    for _ in range(5 if quick else 20):
        t = time.perf_counter()
        compile_script(text)
        times.append(time.perf_counter() - t)
    results.append(Result("sieve", "compile a 500-rule script", statistics.median(times) * 1000, "ms",
                          f"{len(text)} characters"))
    return results
