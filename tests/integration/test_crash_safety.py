"""Crash safety of every write path: SIGKILL ``mailyard serve`` at a random
moment under load, restart it on the same data directory, and check through
IMAP/POP3 and the store that nothing acknowledged was lost, nothing was
applied twice or half, and no UID was reused (DESIGN.md "Durability").

The harness is tests/integration/crashkit.py; ``MAILYARD_CRASH_CYCLES`` sets
the kill-restart cycles per test (default 2), ``MAILYARD_CRASH_REPORT`` a
file for the figures (cycles, invariants checked, duplicates).
"""

from __future__ import annotations

import functools
import itertools
import poplib
import random
import re
import smtplib
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailyard.config import Config
from mailyard.store.sqlite import SQLiteStore
from tests.integration.crashkit import (
    CONNECTION_ERRORS,
    CYCLES,
    DOMAIN,
    HOST,
    Harness,
    Scenario,
    Snapshot,
    WorkerKillHarness,
    _close,
    _quote,
    crash_id,
    digest,
    message_bytes,
    parse_appenduid,
    parse_copyuid,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

StoreChoice = Callable[[Config], None]  # conftest use_store_backend

SMTP_ERRORS = (*CONNECTION_ERRORS, smtplib.SMTPException)
POP_ERRORS = (*CONNECTION_ERRORS, poplib.error_proto)
# seconds after a worker's SIGKILL within which the peer may still read the
# transfer the killed worker had written into the socket before it died
IN_FLIGHT = 2.0


def is_probe(cid: str | None) -> bool:
    return cid is None or cid.startswith("probe-")


def cids_in(snap: Snapshot, user: str, box: str) -> Counter[str]:
    return Counter(m.cid for m in snap[(user, box)].messages.values() if not is_probe(m.cid))


# --- SMTP accept ----------------------------------------------------------------------


def send_data(scenario: Any, h: Harness, s: smtplib.SMTP, cid: str) -> bool:
    """DATA for message ``cid`` after MAIL/RCPT, recording it as completed
    once sent and as acknowledged on 250; False when DATA itself was refused."""
    s.putcmd("data")
    code, text = s.getreply()
    if code != 354:
        h.unexpected(f"DATA answered {code} {text!r}")
        return False
    s.send(message_bytes(cid) + b".\r\n")
    with scenario.lock:
        scenario.completed.add(cid)
    code, text = s.getreply()
    if code == 250:
        with scenario.lock:
            scenario.acked.add(cid)
    else:
        h.unexpected(f"end of DATA answered {code} {text!r}")
    return True


class SMTPAccept(Scenario):
    """Clients send over SMTP to two local recipients; a 250 after DATA means
    the message is in both INBOXes exactly once, intact."""

    name = "smtp-accept"
    services = ("smtp",)
    users = ("alice", "bob")
    threads = 8

    def __init__(self) -> None:
        self.acked: set[str] = set()
        self.completed: set[str] = set()  # the whole message reached the server
        self.lock = threading.Lock()

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, n) for n in range(self.threads)]

    def client(self, h: Harness, n: int) -> None:
        i = 0
        while not h.stop.is_set():
            try:
                with smtplib.SMTP(HOST, h.server.port("smtp"), timeout=10) as s:
                    s.ehlo()
                    for _ in range(5):  # a few transactions per connection
                        cid = f"s{h.server.generation}-{n}-{i}"
                        i += 1
                        s.mail("load@remote.test")
                        s.rcpt(f"alice@{DOMAIN}")
                        s.rcpt(f"bob@{DOMAIN}")
                        if not send_data(self, h, s, cid):
                            break
            except SMTP_ERRORS as exc:
                h.lost(exc, "smtp")
                time.sleep(0.05)

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        stored = {}
        for user in self.users:
            counts = cids_in(snap, user, "INBOX")
            for cid, n in counts.items():
                ok(n == 1, "stored-exactly-once", f"{user}: {cid} x{n}")
                ok(cid in self.completed, "no-message-not-sent-completely", f"{user}: {cid}")
            for cid in self.acked:
                ok(counts[cid] == 1, "acknowledged-message-present", f"{user}: {cid} lost")
            stored[user] = set(counts)
        # one commit for all recipients: a message is in every INBOX or in none
        ok(stored["alice"] == stored["bob"], "delivery-atomic-across-recipients",
           str(stored["alice"] ^ stored["bob"]))

    def progress(self) -> int:
        return len(self.acked)

    def report(self) -> dict[str, Any]:
        return {"acknowledged": len(self.acked), "completed": len(self.completed)}


class SieveAccept(SMTPAccept):
    """As SMTPAccept, but alice's active Sieve script files every message into
    "Filtered" with a keyword: a 250 means it is there exactly once, flagged,
    never also in her INBOX, and bob's plain INBOX got the same messages (the
    script's choice is part of the one commit)."""

    name = "sieve-accept"
    mailboxes = ("Filtered",)

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        from mailyard.delivery.sieve import ScriptStore

        account = await store.get_account(f"alice@{DOMAIN}")
        assert account is not None
        scripts = ScriptStore(h.server.data / "sieve")
        scripts.put(account.id, "crash", 'require ["fileinto", "imap4flags"];\r\n'
                                         'addflag "sieved";\r\nfileinto "Filtered";\r\n')
        scripts.activate(account.id, "crash")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        filtered = cids_in(snap, "alice", "Filtered")
        inbox = cids_in(snap, "alice", "INBOX")
        bob = cids_in(snap, "bob", "INBOX")
        ok(not inbox, "sieve-filed-never-in-inbox", str(sorted(inbox)))
        for cid, n in filtered.items():
            ok(n == 1, "stored-exactly-once", f"alice/Filtered: {cid} x{n}")
            ok(cid in self.completed, "no-message-not-sent-completely", f"alice: {cid}")
        for m in snap[("alice", "Filtered")].messages.values():
            if m.cid is not None and not is_probe(m.cid):
                ok("sieved" in m.flags, "sieve-flag-kept", f"{m.cid}: {sorted(m.flags)}")
        for cid in self.acked:
            ok(filtered[cid] == 1 and bob[cid] == 1, "acknowledged-message-present", f"{cid} lost")
        ok(set(filtered) == set(bob), "delivery-atomic-across-recipients", str(set(filtered) ^ set(bob)))


# --- IMAP APPEND ----------------------------------------------------------------------


class IMAPAppend(Scenario):
    """APPEND OK with APPENDUID: the message is at that UID, exactly once, with
    the bytes and flags sent."""

    name = "imap-append"
    mailboxes = ("Appends",)
    threads = 6

    def __init__(self) -> None:
        self.attempted: set[str] = set()
        self.acked: dict[str, tuple[int, int, frozenset[str]]] = {}
        self.lock = threading.Lock()

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, n) for n in range(self.threads)]

    def client(self, h: Harness, n: int) -> None:
        i = 0
        try:
            m = h.imap("alice")
            try:
                while not h.stop.is_set():
                    cid = f"a{h.server.generation}-{n}-{i}"
                    flags = frozenset({"\\Seen", "$crash"}) if i % 3 == 0 else frozenset()
                    i += 1
                    with self.lock:
                        self.attempted.add(cid)
                    raw = message_bytes(cid)
                    typ, data = m.append(_quote("Appends"), " ".join(sorted(flags)), None, raw)
                    if typ != "OK":
                        h.unexpected(f"APPEND answered {typ} {data}")
                        continue
                    validity, uid = parse_appenduid(data)
                    h.uids.see(h.checks, ("alice", "Appends"), validity, uid, digest(raw))
                    with self.lock:
                        self.acked[cid] = (validity, uid, flags)
            finally:
                _close(m)
        except CONNECTION_ERRORS as exc:
            h.lost(exc, "append")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        view = snap[("alice", "Appends")]
        found = view.by_cid()
        for cid, copies in found.items():
            if is_probe(cid):
                continue
            ok(cid in self.attempted, "no-message-not-appended", cid)
            ok(len(copies) == 1, "appended-at-most-once", f"{cid} x{len(copies)}")
        for cid, (validity, uid, flags) in self.acked.items():
            copies = found.get(cid, [])
            ok(len(copies) == 1, "acknowledged-append-present", f"{cid} lost")
            got = copies[0]
            ok(validity == view.uid_validity and got.uid == uid, "appenduid-names-the-message",
               f"{cid}: APPENDUID {validity} {uid}, found at {got.uid}")
            ok(got.raw == message_bytes(cid), "appended-bytes-identical", cid)
            ok(flags <= got.flags, "appended-flags-kept", f"{cid}: {flags} vs {got.flags}")

    def progress(self) -> int:
        return len(self.acked)

    def report(self) -> dict[str, Any]:
        return {"acknowledged": len(self.acked), "attempted": len(self.attempted)}


# --- IMAP COPY / MOVE -----------------------------------------------------------------


@dataclass
class MoveItem:
    owner: int
    src_uid: int
    copies_acked: list[int]
    copies_attempted: int = 0
    move: str = ""  # "", "attempted", "acked"
    moved_uid: int = 0


class IMAPCopyMove(Scenario):
    """UID COPY then UID MOVE of each message of Src: an acknowledged copy
    (COPYUID) exists; after an acknowledged MOVE the message is only in the
    destination; an unacknowledged one leaves it in exactly one place."""

    name = "imap-copy-move"
    mailboxes = ("Src", "Copies", "Moved")
    threads = 4
    stock = 40  # unmoved messages per thread at the start of a cycle

    def __init__(self) -> None:
        self.items: dict[str, MoveItem] = {}
        self.serial = 0
        self.acked_copies = 0
        self.acked_moves = 0

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        for n in range(self.threads):
            left = sum(1 for it in self.items.values() if it.owner == n and it.move != "acked")
            new = [f"m{n}-{self.serial + k}" for k in range(max(0, self.stock - left))]
            self.serial += len(new)
            if new:
                for cid, uid in (await h.append(store, "alice", "Src", new)).items():
                    self.items[cid] = MoveItem(n, uid, [])

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, n) for n in range(self.threads)]

    def client(self, h: Harness, n: int) -> None:
        mine = sorted((cid for cid, it in self.items.items() if it.owner == n and it.move != "acked"),
                      key=lambda c: self.items[c].src_uid)
        rng = random.Random()
        try:
            m = h.imap("alice")
            try:
                m.select(_quote("Src"))
                for cid in mine:
                    if h.stop.is_set():
                        break
                    it = self.items[cid]
                    while it.copies_attempted == 0 or (it.copies_attempted < 2 and rng.random() < 0.3):
                        it.copies_attempted += 1
                        m.untagged_responses.pop("COPYUID", None)
                        typ, data = m.uid("COPY", str(it.src_uid), _quote("Copies"))
                        if typ != "OK":
                            h.unexpected(f"COPY answered {typ} {data}")
                            return
                        # imaplib files the tagged OK's [COPYUID ...] code under its name
                        codes = m.untagged_responses.pop("COPYUID", [])
                        validity, _src, dst = parse_copyuid(b"[COPYUID " + codes[-1] + b"]")
                        h.uids.see(h.checks, ("alice", "Copies"), validity, dst[0], digest(message_bytes(cid)))
                        it.copies_acked.append(dst[0])
                        self.acked_copies += 1
                    m.untagged_responses.pop("COPYUID", None)
                    it.move = "attempted"
                    typ, data = m.uid("MOVE", str(it.src_uid), _quote("Moved"))
                    if typ != "OK":
                        h.unexpected(f"MOVE answered {typ} {data}")
                        return
                    # RFC 6851 4.3: COPYUID comes in an untagged OK before the expunge
                    codes = m.untagged_responses.pop("COPYUID", [])
                    validity, _src, dst = parse_copyuid(b"[COPYUID " + codes[-1] + b"]")
                    h.uids.see(h.checks, ("alice", "Moved"), validity, dst[0], digest(message_bytes(cid)))
                    it.move, it.moved_uid = "acked", dst[0]
                    self.acked_moves += 1
            finally:
                _close(m)
        except CONNECTION_ERRORS as exc:
            h.lost(exc, "copy/move")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        src, copies, moved = (snap[("alice", b)].by_cid() for b in ("Src", "Copies", "Moved"))
        for box in (src, copies, moved):
            for cid in box:
                ok(is_probe(cid) or cid in self.items, "no-unknown-message", cid)
        for cid, it in self.items.items():
            s, c, mv = src.get(cid, []), copies.get(cid, []), moved.get(cid, [])
            ok(len(it.copies_acked) <= len(c) <= it.copies_attempted, "copies-between-acked-and-attempted",
               f"{cid}: {len(c)} copies, {len(it.copies_acked)} acknowledged, {it.copies_attempted} tried")
            have = {x.uid for x in c}
            for uid in it.copies_acked:
                ok(uid in have, "acknowledged-copy-present", f"{cid} UID {uid}")
            for x in (*s, *c, *mv):
                ok(x.raw == message_bytes(cid), "copied-bytes-identical", cid)
            if it.move == "acked":
                ok(not s and len(mv) == 1 and mv[0].uid == it.moved_uid, "acknowledged-move-only-in-destination",
                   f"{cid}: {len(s)} in Src, {len(mv)} in Moved")
            elif it.move == "attempted":
                ok((len(s), len(mv)) in ((1, 0), (0, 1)), "unacknowledged-move-in-exactly-one-place",
                   f"{cid}: {len(s)} in Src, {len(mv)} in Moved")
            else:
                ok(len(s) == 1 and not mv, "unmoved-message-stays", cid)
            # the model follows what the server shows
            it.copies_acked = sorted(have)
            it.copies_attempted = len(have)
            if mv:
                it.move, it.moved_uid = "acked", mv[0].uid
            else:
                it.move, it.src_uid = "", s[0].uid

    def progress(self) -> int:
        return self.acked_moves

    def report(self) -> dict[str, Any]:
        return {"acknowledged_copies": self.acked_copies, "acknowledged_moves": self.acked_moves}


# --- IMAP EXPUNGE ---------------------------------------------------------------------


@dataclass
class ExpItem:
    box: str
    uid: int
    state: str = "present"  # present, flag-attempted, flagged, expunge-attempted, expunged
    group: int = 0


class IMAPExpunge(Scenario):
    """STORE +FLAGS \\Deleted then EXPUNGE or UID EXPUNGE (RFC 4315): an
    acknowledged expunge stays done, an unacknowledged one is all or nothing,
    and no other message goes."""

    name = "imap-expunge"
    threads = 4
    mailboxes = tuple(f"Exp{n}" for n in range(4))
    stock = 40

    def __init__(self) -> None:
        self.items: dict[str, ExpItem] = {}
        self.serial = 0
        self.ids = itertools.count(1)
        self.acked = 0
        self.modes: dict[int, str] = {}

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        for box in self.mailboxes:
            left = sum(1 for it in self.items.values() if it.box == box and it.state != "expunged")
            new = [f"e-{box}-{self.serial + k}" for k in range(max(0, self.stock - left))]
            self.serial += len(new)
            if new:
                for cid, uid in (await h.append(store, "alice", box, new)).items():
                    self.items[cid] = ExpItem(box, uid)

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, box) for box in self.mailboxes]

    def client(self, h: Harness, box: str) -> None:
        rng = random.Random()
        try:
            m = h.imap("alice")
            try:
                m.select(_quote(box))
                while not h.stop.is_set():
                    live = sorted((it for it in self.items.values() if it.box == box and it.state == "present"),
                                  key=lambda it: it.uid)
                    if not live:
                        break
                    group = live[: rng.randint(1, 3)]
                    gid = next(self.ids)  # itertools.count: one id per command, across threads
                    uids = ",".join(str(it.uid) for it in group)
                    for it in group:
                        it.state, it.group = "flag-attempted", gid
                    typ, data = m.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
                    if typ != "OK":
                        h.unexpected(f"STORE answered {typ} {data}")
                        return
                    for it in group:
                        it.state = "flagged"
                    plain = rng.random() < 0.5
                    # a plain EXPUNGE removes every \Deleted message of the mailbox
                    doomed = [it for it in self.items.values() if it.box == box and it.state == "flagged"] \
                        if plain else group
                    gid = next(self.ids)
                    for it in doomed:
                        it.state, it.group = "expunge-attempted", gid
                    self.modes[gid] = "EXPUNGE" if plain else f"UID EXPUNGE {uids}"
                    typ, data = m.expunge() if plain else m.uid("EXPUNGE", uids)
                    if typ != "OK":
                        h.unexpected(f"EXPUNGE answered {typ} {data}")
                        return
                    for it in doomed:
                        it.state = "expunged"
                    self.acked += len(doomed)
            finally:
                _close(m)
        except CONNECTION_ERRORS as exc:
            h.lost(exc, "expunge")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        outcome: dict[int, set[bool]] = {}
        members: dict[int, list[str]] = {}
        for box in self.mailboxes:
            found = snap[("alice", box)].by_cid()
            for cid in found:
                ok(is_probe(cid) or cid in self.items, "no-unknown-message", cid)
        views = {box: snap[("alice", box)].by_cid() for box in self.mailboxes}
        for cid, it in self.items.items():
            there = views[it.box].get(cid, [])
            ok(len(there) <= 1, "no-duplicate", cid)
            if it.state == "expunged":
                ok(not there, "acknowledged-expunge-stays", cid)
            elif it.state == "expunge-attempted":
                outcome.setdefault(it.group, set()).add(bool(there))
                members.setdefault(it.group, []).append(
                    f"{cid} UID {it.uid} {'present ' + str(sorted(there[0].flags)) if there else 'gone'}")
                ok(not there or "\\Deleted" in there[0].flags, "expunged-only-if-deleted", cid)
            else:
                ok(len(there) == 1, "nothing-else-lost", f"{cid} ({it.state}) is gone")
                if it.state == "flagged":
                    ok("\\Deleted" in there[0].flags, "acknowledged-deleted-flag-persists", cid)
                elif it.state == "present":
                    ok("\\Deleted" not in there[0].flags, "no-flag-not-stored", cid)
            if there:
                it.uid = there[0].uid
                it.state = "flagged" if "\\Deleted" in there[0].flags else "present"
            else:
                it.state = "expunged"
        for group, seen in outcome.items():
            ok(len(seen) == 1, "expunge-all-or-nothing",
               f"{self.modes.get(group)} expunged part of {members[group]}")

    def progress(self) -> int:
        return self.acked

    def report(self) -> dict[str, Any]:
        return {"acknowledged_expunges": self.acked}


# --- IMAP STORE -----------------------------------------------------------------------


@dataclass
class FlagItem:
    owner: int
    uid: int
    acked: frozenset[str] = frozenset()
    pending: frozenset[str] | None = None
    group: int = 0


class IMAPStore(Scenario):
    """UID STORE FLAGS / +FLAGS / -FLAGS on 1-3 messages: an acknowledged
    change persists; an unacknowledged one is applied to all or none."""

    name = "imap-store"
    mailboxes = ("Flags",)
    threads = 4
    per_thread = 20

    def __init__(self) -> None:
        self.items: dict[str, FlagItem] = {}
        self.ids = itertools.count(1)
        self.acked = 0

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        if self.items:
            return
        for n in range(self.threads):
            cids = [f"f{n}-{k}" for k in range(self.per_thread)]
            for cid, uid in (await h.append(store, "alice", "Flags", cids)).items():
                self.items[cid] = FlagItem(n, uid)

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, n) for n in range(self.threads)]

    def client(self, h: Harness, n: int) -> None:
        rng = random.Random()
        mine = [it for it in self.items.values() if it.owner == n]
        try:
            m = h.imap("alice")
            try:
                m.select(_quote("Flags"))
                while not h.stop.is_set():
                    group = rng.sample(mine, rng.randint(1, 3))
                    gid = next(self.ids)
                    k = rng.randrange(64)
                    mode = rng.choice(("FLAGS", "+FLAGS", "-FLAGS"))
                    if mode == "FLAGS":
                        change = frozenset({rng.choice(("\\Seen", "\\Flagged", "\\Answered")), f"$v{k}"})
                    elif mode == "+FLAGS":
                        change = frozenset({f"$v{k}", rng.choice(("\\Seen", "\\Draft"))})
                    else:
                        change = frozenset(rng.sample(sorted(group[0].acked | {"\\Seen"}), 1))
                    for it in group:
                        it.group = gid
                        it.pending = change if mode == "FLAGS" else (
                            it.acked | change if mode == "+FLAGS" else it.acked - change)
                    typ, data = m.uid("STORE", ",".join(str(it.uid) for it in group), mode + ".SILENT",
                                      "(" + " ".join(sorted(change)) + ")")
                    if typ != "OK":
                        h.unexpected(f"STORE answered {typ} {data}")
                        return
                    for it in group:
                        assert it.pending is not None
                        it.acked, it.pending = it.pending, None
                    self.acked += 1
            finally:
                _close(m)
        except CONNECTION_ERRORS as exc:
            h.lost(exc, "store")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        found = snap[("alice", "Flags")].by_cid()
        which: dict[int, set[str]] = {}
        for cid, it in self.items.items():
            there = found.get(cid, [])
            ok(len(there) == 1, "message-present", cid)
            flags = there[0].flags
            allowed = [it.acked] + ([it.pending] if it.pending is not None else [])
            ok(flags in allowed, "acknowledged-flags-persist",
               f"{cid}: {sorted(flags)}, acknowledged {sorted(it.acked)}, pending {it.pending}")
            if it.pending is not None and it.pending != it.acked:
                which.setdefault(it.group, set()).add("new" if flags == it.pending else "old")
            it.acked, it.pending = flags, None
        for group, seen in which.items():
            ok(len(seen) == 1, "store-all-or-nothing", f"STORE {group} applied to part of its messages")

    def progress(self) -> int:
        return self.acked

    def report(self) -> dict[str, Any]:
        return {"acknowledged_stores": self.acked}


# --- POP3 QUIT ------------------------------------------------------------------------


class POP3Quit(Scenario):
    """DELE then QUIT (RFC 1939 6): +OK after QUIT means the messages are
    gone; a session cut before QUIT deletes nothing; never a part."""

    name = "pop3-quit"
    services = ("pop3",)
    users = tuple(f"pop{n}" for n in range(4))
    stock = 40

    def __init__(self) -> None:
        self.state: dict[str, tuple[str, str, int]] = {}  # cid -> (user, state, session)
        self.serial = 0
        self.ids = itertools.count(1)
        self.acked = 0

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        for user in self.users:
            left = sum(1 for u, s, _ in self.state.values() if u == user and s != "deleted")
            new = [f"p-{user}-{self.serial + k}" for k in range(max(0, self.stock - left))]
            self.serial += len(new)
            if new:
                await h.append(store, user, "INBOX", new)
                for cid in new:
                    self.state[cid] = (user, "present", 0)

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, user) for user in self.users]

    def client(self, h: Harness, user: str) -> None:
        rng = random.Random()
        while not h.stop.is_set():
            session = next(self.ids)
            marked: list[str] = []
            try:
                p = poplib.POP3(HOST, h.server.port("pop3"), timeout=10)
                try:
                    p.user(f"{user}@{DOMAIN}")
                    p.pass_(h.password(user))
                    count, _size = p.stat()
                    for num in rng.sample(range(1, count + 1), min(count, rng.randint(1, 3))):
                        _resp, lines, _ = p.top(num, 0)
                        cid = crash_id(b"\r\n".join(lines) + b"\r\n\r\n")
                        if cid is None or is_probe(cid):
                            continue
                        p.dele(num)
                        marked.append(cid)
                        self.state[cid] = (user, "marked", session)
                    for cid in marked:
                        self.state[cid] = (user, "quit-sent", session)
                    resp = p.quit()
                    if not resp.startswith(b"+OK"):
                        h.unexpected(f"QUIT answered {resp!r}")
                        return
                    for cid in marked:
                        self.state[cid] = (user, "deleted", session)
                    self.acked += 1
                finally:
                    p.close()
            except POP_ERRORS as exc:
                h.lost(exc, "pop3")
                time.sleep(0.05)

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        boxes = {user: cids_in(snap, user, "INBOX") for user in self.users}
        for user, counts in boxes.items():
            for cid, n in counts.items():
                ok(cid in self.state and n == 1, "no-unknown-or-duplicate-message", f"{user}: {cid} x{n}")
        outcome: dict[int, set[bool]] = {}
        for cid, (user, state, session) in self.state.items():
            there = boxes[user][cid] > 0
            if state == "deleted":
                ok(not there, "acknowledged-quit-deleted", cid)
            elif state == "quit-sent":
                outcome.setdefault(session, set()).add(there)
            else:
                ok(there, "no-deletion-without-quit", f"{cid} ({state}) is gone")
            self.state[cid] = (user, "present" if there else "deleted", 0)
        for session, seen in outcome.items():
            ok(len(seen) == 1, "quit-all-or-nothing", f"session {session} deleted part of its messages")

    def progress(self) -> int:
        return self.acked

    def report(self) -> dict[str, Any]:
        return {"acknowledged_quits": self.acked, "sessions": next(self.ids) - 1}


# --- the outbound queue ---------------------------------------------------------------


class FakePeer(socketserver.ThreadingTCPServer):
    """A receiving SMTP server (the smarthost) that records every 250 it gives:
    ``reject-*`` recipients get 550, ``defer-*`` ones 451 the first time."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, generation: Any) -> None:
        super().__init__((HOST, 0), _PeerHandler)
        self.generation = generation  # callable: the sender's current life
        self.accepted: list[tuple[str, str, int, float, bytes]] = []  # cid, rcpt, generation, time, raw
        self.deferred: set[str] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _PeerHandler(socketserver.StreamRequestHandler):
    server: FakePeer

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        peer = self.server
        try:
            self.send("220 peer.test ESMTP fake")
            rcpts: list[str] = []
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    self.wfile.write(b"250-peer.test\r\n250 8BITMIME\r\n")
                    self.wfile.flush()
                elif verb == "MAIL":
                    rcpts = []
                    self.send("250 2.1.0 ok")
                elif verb == "RCPT":
                    addr = cmd.partition("<")[2].partition(">")[0].lower()
                    if addr.startswith("reject-"):
                        self.send("550 5.1.1 no such user")
                    elif addr.startswith("defer-") and addr not in peer.deferred:
                        with peer.lock:
                            peer.deferred.add(addr)
                        self.send("451 4.3.0 try again later")
                    else:
                        rcpts.append(addr)
                        self.send("250 2.1.5 ok")
                elif verb == "DATA":
                    if not rcpts:
                        self.send("554 5.5.1 no valid recipients")
                        continue
                    self.send("354 go ahead")
                    lines = []
                    while True:
                        data = self.rfile.readline()
                        if not data:
                            return  # cut mid-message: not accepted
                        if data == b".\r\n":
                            break
                        lines.append(data[1:] if data.startswith(b".") else data)
                    raw = b"".join(lines)
                    cid = crash_id(raw) or "?"
                    with peer.lock:
                        gen = peer.generation()
                        for r in rcpts:
                            peer.accepted.append((cid, r, gen, time.monotonic(), raw))
                    self.send("250 2.0.0 queued")
                    rcpts = []
                elif verb == "RSET":
                    rcpts = []
                    self.send("250 2.0.0 ok")
                elif verb == "NOOP":
                    self.send("250 2.0.0 ok")
                elif verb == "QUIT":
                    self.send("221 2.0.0 bye")
                    return
                else:
                    self.send("502 5.5.2 not implemented")
        except OSError:
            return


class QueueDelivery(Scenario):
    """Submission to a local and several remote recipients through a smarthost:
    the local copy and the queue entry commit together; after the restart every
    queued message reaches every accepting recipient at least once (twice only
    across a kill, between the peer's 250 and our commit), and a 550 gives
    exactly one DSN in the sender's INBOX."""

    name = "queue-delivery"
    services = ("submission",)
    users = ("alice", "bob")
    threads = 4

    def __init__(self) -> None:
        self.harness: Harness | None = None
        self.peer = FakePeer(lambda: self.harness.server.generation if self.harness else 0)
        self.rcpts: dict[str, list[str]] = {}
        self.completed: set[str] = set()
        self.acked: set[str] = set()
        self.lock = threading.Lock()
        self.serial = 0
        self.window_duplicates = 0
        self.max_gap = 0.0
        self.dsns = 0

    def configure(self, cfg: Config) -> None:
        d = cfg.delivery
        d.relay_host, d.relay_port, d.relay_tls = HOST, self.peer.server_address[1], "none"
        d.retry_initial, d.retry_factor, d.poll_interval = 0.3, 1.0, 0.5
        d.connection_cache_time = 0.5

    async def seed(self, h: Harness, store: SQLiteStore) -> None:
        self.harness = h  # the peer stamps each 250 with the server's current life
        # the load's From (crashkit.message_bytes) is not alice's own address:
        # a grant, as an admin gives for a shared address (user allow-from)
        await store.allow_senders(f"alice@{DOMAIN}", ["load@crash.test"])

    def workers(self, h: Harness) -> list[Any]:
        return [functools.partial(self.client, h, n) for n in range(self.threads)]

    def recipients(self, cid: str) -> list[str]:
        """Every message: a local copy for bob and two remote recipients; every
        third one also a recipient the peer refuses (550: a DSN), every third
        one a recipient it defers once (451: a retry)."""
        with self.lock:
            k = self.serial
            self.serial += 1
        out = [f"bob@{DOMAIN}", f"ok-{cid}@remote.test", f"ok2-{cid}@far.test"]
        if k % 3 == 0:
            out.append(f"reject-{cid}@remote.test")
        if k % 3 == 1:
            out.append(f"defer-{cid}@far.test")
        return out

    def client(self, h: Harness, n: int) -> None:
        i = 0
        while not h.stop.is_set():
            try:
                with smtplib.SMTP(HOST, h.server.port("submission"), timeout=10) as s:
                    s.ehlo()
                    s.login(f"alice@{DOMAIN}", h.password("alice"))
                    for _ in range(10):
                        cid = f"q{h.server.generation}-{n}-{i}"
                        i += 1
                        rcpts = self.recipients(cid)
                        with self.lock:
                            self.rcpts[cid] = rcpts
                        s.mail(f"alice@{DOMAIN}")
                        for r in rcpts:
                            s.rcpt(r)
                        if not send_data(self, h, s, cid):
                            break
            except SMTP_ERRORS as exc:
                h.lost(exc, "submission")
                time.sleep(0.05)

    def quiesce(self, h: Harness) -> None:
        """Wait until the restarted server has emptied its queue. That is the
        end of its work: the peer records a delivery before its 250, and an
        attempt's outcome, its DSN (a local copy for alice) and the removal
        of the entry commit together (Store.queue_update)."""
        wait_until(lambda: h.queue_size() == 0, 60,
                   what=lambda: f"the queue to empty after the restart ({h.queue_size()} left)")

    def check(self, h: Harness, snap: Snapshot) -> None:
        ok = h.checks.ok
        queued = set(cids_in(snap, "bob", "INBOX"))  # the local copy commits with the queue entry
        got: dict[tuple[str, str], list[tuple[int, float, bytes]]] = {}
        with self.peer.lock:
            for cid, rcpt, gen, when, raw in self.peer.accepted:
                got.setdefault((cid, rcpt), []).append((gen, when, raw))
        dsn_for: Counter[str] = Counter()
        for m in snap[("alice", "INBOX")].messages.values():
            if b"multipart/report" in m.raw[: m.raw.find(b"\r\n\r\n")]:
                found = re.search(rb"X-Crashkit-Id: (\S+)", m.raw)  # the original's header, in the report
                cid = found.group(1).decode() if found else None
                ok(cid is not None, "dsn-names-the-message", m.raw[:300].decode(errors="replace"))
                dsn_for[cid] += 1
        for cid in self.acked:
            ok(cid in queued, "acknowledged-submission-queued", cid)
        for cid in queued:
            ok(cid in self.completed, "no-message-not-sent-completely", cid)
        self.window_duplicates = 0
        self.dsns = sum(dsn_for.values())
        for cid, rcpts in self.rcpts.items():
            remote = [r for r in rcpts if not r.endswith("@" + DOMAIN)]
            for r in remote:
                deliveries = got.get((cid, r.lower()), [])
                if cid not in queued:
                    ok(not deliveries, "unqueued-message-not-sent", f"{cid} to {r}")
                    continue
                if r.startswith("reject-"):
                    ok(not deliveries, "rejected-recipient-not-delivered", f"{cid} to {r}")
                    continue
                ok(deliveries, "queued-message-delivered", f"{cid} to {r}: never arrived")
                gens = Counter(g for g, _, _ in deliveries)
                ok(max(gens.values()) == 1, "no-duplicate-within-one-run",
                   f"{cid} to {r}: {len(deliveries)} times in generation(s) {dict(gens)}")
                for _g, _when, raw in deliveries:
                    body = message_bytes(cid)
                    ok(raw.endswith(body[body.find(b"\r\n\r\n"):]), "delivered-bytes-intact", f"{cid} to {r}")
                if len(deliveries) > 1:
                    # a re-send after a kill: the earlier 250 came shortly before that kill
                    self.window_duplicates += len(deliveries) - 1
                    for g, when, _ in sorted(deliveries)[:-1]:
                        killed = h.server.kill_times.get(g)
                        before = h.server.kill_times.get(g - 1)
                        if killed is None and before is not None and 0 <= when - before < IN_FLIGHT:
                            # the killed worker's transfer, already in the socket,
                            # read by the peer just after the kill (and its count)
                            killed = before
                        ok(killed is not None, "duplicate-only-across-a-kill", f"{cid} to {r}")
                        assert killed is not None
                        self.max_gap = max(self.max_gap, killed - when)
            bounced = any(r.startswith("reject-") for r in rcpts) and cid in queued
            ok(dsn_for[cid] == (1 if bounced else 0), "one-dsn-per-failed-message",
               f"{cid}: {dsn_for[cid]} DSNs, expected {int(bounced)}")

    def progress(self) -> int:
        return len(self.peer.accepted)

    def report(self) -> dict[str, Any]:
        return {
            "acknowledged": len(self.acked), "queued": len(self.completed),
            "peer_deliveries": len(self.peer.accepted), "dsns": self.dsns,
            "duplicates_in_smtp_window": self.window_duplicates,
            "max_seconds_from_peer_250_to_kill": round(self.max_gap, 3),
        }

    def close(self) -> None:
        self.peer.close()


# --- the tests --------------------------------------------------------------------------


def run(tmp_path: Path, scenario: Scenario, store: StoreChoice) -> dict[str, Any]:
    result = Harness(tmp_path, scenario, store).run()
    assert result["cycles"] == CYCLES
    # each cycle's kill waited for the load to get going
    assert scenario.progress() >= CYCLES * scenario.min_progress
    return result


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_smtp_accept_survives_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, SMTPAccept(), use_store_backend)


def test_sieve_filed_delivery_survives_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, SieveAccept(), use_store_backend)


def test_imap_append_survives_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, IMAPAppend(), use_store_backend)


@pytest.mark.both_backends  # also on PostgreSQL (tests/conftest.py)
def test_imap_copy_move_survive_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, IMAPCopyMove(), use_store_backend)


def test_imap_expunge_survives_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, IMAPExpunge(), use_store_backend)


def test_imap_store_survives_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, IMAPStore(), use_store_backend)


def test_pop3_quit_deletions_survive_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    run(tmp_path, POP3Quit(), use_store_backend)


@pytest.mark.both_backends  # a killed node's queue leases are over at once
def test_queue_delivery_and_bounces_survive_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    result = run(tmp_path, QueueDelivery(), use_store_backend)
    assert result["dsns"] > 0, "no bounce was made"


# --- a worker process killed, the server lives on ---------------------------------------


class SMTPAcceptWorkers(SMTPAccept):
    """SMTP load on a server of two worker processes; one worker is SIGKILLed
    mid-delivery and the supervisor replaces it: every 250 either worker gave
    is in both INBOXes exactly once, and the other worker's clients go on."""

    name = "smtp-accept-worker-kill"

    def configure(self, cfg: Config) -> None:
        cfg.server.workers = 2


class QueueDeliveryWorkers(QueueDelivery):
    """Outbound queue on a server of two workers (worker 0 runs the queue);
    the SIGKILL hits either worker, the queue's among them."""

    name = "queue-delivery-worker-kill"

    def configure(self, cfg: Config) -> None:
        super().configure(cfg)
        cfg.server.workers = 2


class IMAPAppendWorkers(IMAPAppend):
    """IMAP APPEND on two workers; one is SIGKILLed mid-APPEND."""

    name = "imap-append-worker-kill"

    def configure(self, cfg: Config) -> None:
        cfg.server.workers = 2


class POP3QuitWorkers(POP3Quit):
    """POP3 on two workers; the worker killed may hold maildrop locks, which
    must go with it (the next session of that user gets the maildrop)."""

    name = "pop3-quit-worker-kill"

    def configure(self, cfg: Config) -> None:
        cfg.server.workers = 2


@pytest.mark.parametrize("scenario", [IMAPAppendWorkers, POP3QuitWorkers], ids=["imap-append", "pop3-quit"])
def test_writes_survive_worker_sigkill(tmp_path: Path, scenario: type[Scenario],
                                       use_store_backend: StoreChoice) -> None:
    s = scenario()
    result = WorkerKillHarness(tmp_path, s, store=use_store_backend).run()
    assert result["cycles"] == CYCLES and result["workers_killed"] == CYCLES
    assert s.progress() >= CYCLES * s.min_progress


def test_smtp_accept_survives_worker_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    scenario = SMTPAcceptWorkers()
    result = WorkerKillHarness(tmp_path, scenario, store=use_store_backend).run()
    assert result["cycles"] == CYCLES and result["workers_killed"] == CYCLES
    assert scenario.progress() >= CYCLES * scenario.min_progress


def test_queue_delivery_survives_worker_sigkill(tmp_path: Path, use_store_backend: StoreChoice) -> None:
    scenario = QueueDeliveryWorkers()
    result = WorkerKillHarness(tmp_path, scenario, store=use_store_backend).run()
    assert result["cycles"] == CYCLES and result["workers_killed"] == CYCLES
