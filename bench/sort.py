"""IMAP SORT and THREAD (RFC 5256) on a 100,000-message INBOX, with Python's
imaplib as the client.

The corpus is small messages (the keys are in the header; bodies do not
matter to SORT): 2,000 senders, subjects of which a third carry "Re:" /
"Fwd:" / "[list]" prefixes, Dates spread over a year in several zones, and
two thirds of the messages replying to an earlier one (References or
In-Reply-To), so THREAD REFERENCES builds real trees. The INBOX is filled
through the store API before the server starts and derived first, as after
normal delivery.

Figures (medians of several runs, first a warm-up): ``SORT (DATE)``,
``SORT (SUBJECT)``, ``SORT (REVERSE FROM DATE)``, ``SORT (DISPLAYFROM)``,
``THREAD REFERENCES`` and ``THREAD ORDEREDSUBJECT``, each ``UTF-8 ALL``,
the whole answer read by the client. When Dovecot is installed it runs in
the same benchmark with the same corpus (bench/dovecot.py) and the same
commands alternate between the two servers.
"""

from __future__ import annotations

import gc
import imaplib
import random
import statistics
import time

from .common import USERS, BenchServer, Result, progress
from .imap import ALICE, _fill

MESSAGES = 100_000
RUNS = 5
_WORDS = ["budget", "meeting", "release", "lunch", "report", "review", "plans", "invoice", "travel",
          "schedule", "party", "server", "backup", "contract", "design", "été", "Grüße", "naïve"]
_ZONES = ["+0000", "-0800", "+0100", "+0530", "-0300", "+0900"]


def message(rng: random.Random, n: int) -> bytes:
    """One small message with the header fields SORT and THREAD read."""
    who = rng.randrange(2_000)
    subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    fields = [
        f"From: Sender {who} <sender{who}@remote.test>",
        f"To: Alice <{ALICE}>",
        f"Date: {rng.randint(1, 28)} {rng.choice(['Jan', 'Mar', 'Jun', 'Sep', 'Dec'])} 2026 "
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} {rng.choice(_ZONES)}",
        f"Message-ID: <{n}.bench@remote.test>",
    ]
    if n and rng.random() < 0.67:
        parent = rng.randrange(max(0, n - 500), n)
        subject = rng.choice(["Re: ", "RE: ", "Fwd: ", "[list] Re: "]) + subject
        if rng.random() < 0.8:
            refs = " ".join(f"<{p}.bench@remote.test>" for p in sorted({parent, rng.randrange(0, parent + 1)}))
            fields.append(f"References: {refs}")
        else:
            fields.append(f"In-Reply-To: <{parent}.bench@remote.test>")
    fields.append(f"Subject: {subject}")
    return ("\r\n".join(fields) + f"\r\n\r\nmessage {n}\r\n").encode()


def corpus(count: int) -> list[bytes]:
    rng = random.Random(5256)
    return [message(rng, n) for n in range(count)]


COMMANDS = {
    "SORT (DATE)": ("SORT", "(DATE) UTF-8 ALL"),
    "SORT (SUBJECT)": ("SORT", "(SUBJECT) UTF-8 ALL"),
    "SORT (REVERSE FROM DATE)": ("SORT", "(REVERSE FROM DATE) UTF-8 ALL"),
    "SORT (DISPLAYFROM)": ("SORT", "(DISPLAYFROM) UTF-8 ALL"),
    "THREAD REFERENCES": ("THREAD", "REFERENCES UTF-8 ALL"),
    "THREAD ORDEREDSUBJECT": ("THREAD", "ORDEREDSUBJECT UTF-8 ALL"),
}


def _login(port: int) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=300)
    c.login(ALICE, USERS[ALICE])
    c.select("INBOX", readonly=True)
    return c


def _run(c: imaplib.IMAP4, command: str, args: str) -> float:
    gc.collect()
    start = time.perf_counter()
    typ, data = c._simple_command(command, args)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    assert typ == "OK", (command, args, data)
    c.untagged_responses.clear()  # type: ignore[attr-defined]
    return elapsed


def run(quick: bool = False) -> list[Result]:
    from . import dovecot
    from .pop3 import password_hash

    count = 10_000 if quick else MESSAGES
    server = BenchServer(("imap",), fsync=False)
    ref: dovecot.Dovecot | None = None
    try:
        server.setup()
        progress(f"filling INBOX with {count} small messages for SORT/THREAD")
        msgs = corpus(count)
        _fill(server, msgs)
        server.start()
        ports = [server.ports["imap"]]
        if dovecot.available():
            progress("starting Dovecot with the same corpus")
            ref = dovecot.Dovecot(("imap",), ALICE, password_hash(server, ALICE), USERS[ALICE], msgs)
            ref.start()
            ports.append(ref.ports["imap"])
        conns = [_login(p) for p in ports]
        for c in conns:
            c._mesg = lambda *a, **k: None  # type: ignore[attr-defined]  # no debug printing
        values: dict[str, list[list[float]]] = {name: [[] for _ in ports] for name in COMMANDS}
        for name, (command, args) in COMMANDS.items():
            for c in conns:
                _run(c, command, args)  # warm-up: Dovecot builds its index and cache here
            for _ in range(RUNS):
                for k, c in enumerate(conns):
                    values[name][k].append(_run(c, command, args))
        for c in conns:
            c.logout()
    finally:
        server.stop()
        if ref is not None:
            ref.stop()
    med = {name: [statistics.median(v) for v in per] for name, per in values.items()}
    progress(", ".join(f"{name} {v[0]:.3f} s" + (f" (Dovecot {v[1]:.3f} s)" if ref else "")
                       for name, v in med.items()))
    detail = {"messages": count, "runs": RUNS}
    out: list[Result] = []
    for name, v in med.items():
        out.append(Result("sort", f"{name} of {count:,}", v[0], "s", "target well under 1 s",
                          {**detail, "all": values[name][0]}))
        if ref is not None:
            out.append(Result("sort", "  Dovecot (this run)", v[1], "s", dovecot.label(ref),
                              {**detail, "all": values[name][1]}))
    return out
