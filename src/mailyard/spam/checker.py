"""The spam verdict of one message received on the MX port, all together:
the built-in reputation checks (signals.py, on a thread: the resolver
blocks) and rspamd (rspamd.py, async) run side by side after DATA, their
scores add up, rspamd's action decides refusals, and each recipient's
settings decide their filing (filing.py). Every decision is logged in one
line (``spam_verdict``) and recorded (store/spamlog.py) for
``mailyard spam explain``.

What depends only on the client is done once per client, not per message:
its DNS checks start at its HELO (``prefetch``) and their answers serve its
messages for RECENT_TTL seconds (one run at a time per client); each
account's preferences are read again only when the store's
``settings_version`` says some process changed settings.

rspamd unreachable, slow or broken: the built-in score alone decides and
the failure is logged; mail is never refused because rspamd is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..config import SpamConfig
from ..mailauth.dnscache import CacheOnly, NotCached, Resolver
from ..mailauth.inbound import InboundVerdict
from ..message.address import iter_mailboxes, parse_address_list
from ..message.headers import split_fields
from ..message.parse import header_end, split_header_body
from ..store.api import Account, Store
from ..store.spamlog import DecisionLog
from . import headers, signals
from .filing import Filing, Prefs, file_message, prefs
from .rspamd import RspamdClient, RspamdResult, RspamdUnavailable
from .score import Tests, builtin_tests, parse_list, parse_scores

log = logging.getLogger("mailyard.spam")

# The DNS signals of a client (address, HELO) are reused this many seconds,
# for at most this many clients.
RECENT_TTL = 60.0
RECENT_MAX = 10_000

# Accounts whose spam preferences are kept (see _prefs).
PREFS_MAX = 10_000
# Client addresses whose [spam] trusted_networks answer is kept.
TRUSTED_MAX = 10_000
# At most this many clients' DNS checks started ahead of their message
# (prefetch) run at once; past it a client's checks wait for its message.
PREFETCH_MAX = 32

# The part of a message whose Message-ID and From fields are read.
_HEADER_MAX = 256 * 1024

# The fields we write ourselves: rspamd's own versions of them are not copied.
_OURS = ("x-spam-status", "x-spam-score", "x-spam-flag")

# The Message-ID and From fields of a header whose lines all end in LF: a
# field is its line and the continuation lines after it (RFC 5322 2.2); the
# name may have WSP before its colon, as split_fields allows.
_WANTED_FIELDS = re.compile(rb"^(message-id|from)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.I | re.M)


@dataclass
class Judgement:
    """What the MX glue does with the message."""

    action: str  # "accept", "reject" (550 5.7.1) or "tempfail" (451 4.7.1)
    text: str  # the reply text of a refusal
    score: float
    message: bytes  # the message with the verdict's header edits
    filings: dict[int, Filing] = field(default_factory=dict)  # by account id

    @property
    def junk(self) -> frozenset[int]:
        return frozenset(aid for aid, f in self.filings.items() if f.junk)

    @property
    def fields(self) -> dict[int, bytes]:
        return {aid: f.fields for aid, f in self.filings.items()}


@dataclass
class Builtin:
    tests: Tests
    rdns: str = "skipped"
    rdns_name: str | None = None
    helo: str = "skipped"
    problems: list[str] = field(default_factory=list)


def _header_fields(message: bytes, body_start: int | None = None) -> tuple[str, list[bytes]]:
    """The Message-ID and the raw values of the From fields (as
    message/headers.py split_fields gives them), from the first 256 KB.
    ``body_start``: where the message's body starts (header_end), when the
    caller knows: the header is then the same bytes as this function finds
    in the first 256 KB alone (an empty line found only past them leaves
    all 256 KB header, as does a body starting past them)."""
    if body_start is None:
        header, _ = split_header_body(message[:_HEADER_MAX])
    else:
        header = message[:min(body_start, _HEADER_MAX)]
    if header.count(b"\r") != header.count(b"\r\n"):
        # a bare CR ends a line for split_fields: its reading, the slow way
        fields = [(n.lower(), v) for n, v in split_fields(header) if n.lower() in ("message-id", "from")]
    else:
        fields = []
        for m in _WANTED_FIELDS.finditer(header):
            value = m.group(2)
            if value.endswith(b"\r"):
                value = value[:-1]  # the CR of the field's last CRLF
            fields.append((m.group(1).lower().decode(), value[1:] if value[:1] == b" " else value))
    message_id = ""
    froms: list[bytes] = []
    for name, value in fields:
        if name == "message-id":
            if not message_id:
                message_id = value.decode("utf-8", "replace").strip()[:300]
        else:
            froms.append(value)
    return message_id, froms


def _from_addresses(froms: Sequence[bytes]) -> list[str]:
    """The addresses of From field values."""
    senders: list[str] = []
    for value in froms:
        senders.extend(m.addr_spec for m in iter_mailboxes(parse_address_list(value.decode("utf-8", "replace"))))
    return senders


def _header_info(message: bytes) -> tuple[str, list[str]]:
    """The Message-ID and the From addresses."""
    message_id, froms = _header_fields(message)
    return message_id, _from_addresses(froms)


class SpamChecker:
    def __init__(self, config: SpamConfig, store: Store, decisions: DecisionLog, resolver: Resolver | None,
                 rspamd: RspamdClient | None, *, hostname: str) -> None:
        self.config = config
        self.store = store
        self.decisions = decisions
        self.resolver = resolver if config.checks else None
        self.rspamd = rspamd
        self.hostname = hostname
        self.scores = parse_scores(config.scores)
        self.lists = [parse_list(item) for item in config.dnsbl]
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in config.trusted_networks]
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spam")
        # (ip, helo) -> (expires, the DNS signals): see _builtin
        self._recent: dict[tuple[str, str], tuple[float, tuple[Any, ...]]] = {}
        self._recent_lock = threading.Lock()  # used on the event loop and the pool's threads
        # this server's names (its host name and local domains), kept while
        # the store's directory_version stays
        self._own_names: tuple[int, list[str]] | None = None
        # account id -> (the store's settings_version, its spam preferences):
        # reused while no process changed any account's settings
        self._prefs_cache: dict[int, tuple[int, Prefs]] = {}
        # client address -> in [spam] trusted_networks
        self._trusted_cache: dict[str, bool] = {}
        # (ip, helo) -> the DNS checks of that client under way on the pool:
        # the messages meanwhile wait for them rather than ask DNS again
        self._inflight: dict[tuple[str, str], asyncio.Future[Builtin]] = {}
        self._prefetches = 0  # of _inflight, the ones prefetch started

    async def _names(self) -> list[str]:
        """This server's host name and local domains (the HELO check's "ours")."""
        version = self.store.directory_version
        if self._own_names is None or self._own_names[0] != version:
            self._own_names = (version, [self.hostname, *(await self.store.list_domains())])
        return self._own_names[1]

    async def _prefs(self, account_id: int) -> Prefs:
        """The account's spam preferences (filing.py), read again only when
        the store's settings_version moved (a settings change committed by
        any process), so a change is seen by the next message."""
        version = self.store.settings_version()  # before the read: a change meanwhile moves it
        if version is not None:
            hit = self._prefs_cache.get(account_id)
            if hit is not None and hit[0] == version:
                return hit[1]
        found = prefs(await self.store.get_settings(account_id))
        if version is not None:
            if len(self._prefs_cache) >= PREFS_MAX:
                self._prefs_cache.clear()
            self._prefs_cache[account_id] = (version, found)
        return found

    def _trusted(self, ip: str) -> bool:
        known = self._trusted_cache.get(ip)
        if known is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self.trusted)
            if len(self._trusted_cache) >= TRUSTED_MAX:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = known
        return known

    def _builtin(self, ip: str, helo: str, own_names: Sequence[str], own_ips: Sequence[str],
                 auth: InboundVerdict | None, cache_only: bool = False) -> Builtin:
        """The built-in checks (blocking: DNS); with ``cache_only`` from the
        resolver's cache alone (``NotCached`` on a miss)."""
        resolver: Resolver | CacheOnly | None = self.resolver
        if cache_only and resolver is not None:
            resolver = CacheOnly(resolver)
        spf = auth.spf.result if auth is not None else None
        dkim = [r.result for r in auth.dkim] if auth is not None else []
        dmarc = auth.dmarc.result if auth is not None and auth.dmarc is not None else None
        if resolver is None or self._trusted(ip):
            return Builtin(builtin_tests(rdns="ok", helo="ok", listed=(), spf=spf, dkim=dkim, dmarc=dmarc,
                                         scores=self.scores))
        key = (ip, helo.lower())
        now = time.monotonic()
        with self._recent_lock:
            hit = self._recent.get(key)
        if hit is not None and hit[0] > now:
            rdns, rdns_name, helo_state, listed, problems = hit[1]
            problems = list(problems)
        else:
            rdns, rdns_name = signals.fcrdns(resolver, ip)
            helo_state = signals.check_helo(resolver, helo, ip, own_names, own_ips)
            listed, problems = signals.listed_on(resolver, ip, self.lists)
            for what, state in (("rdns", rdns), ("helo", helo_state)):
                if state == "temperror":
                    problems.append(f"{what}: temperror")
            if not problems:
                # A sender's next messages (a connection's, a list's) reuse
                # these: the DNS answers behind them are cached as long anyway.
                with self._recent_lock:
                    self._recent[key] = (now + RECENT_TTL, (rdns, rdns_name, helo_state, listed, tuple(problems)))
                    while len(self._recent) > RECENT_MAX:
                        self._recent.pop(next(iter(self._recent)))
        tests = builtin_tests(rdns=rdns, helo=helo_state, listed=listed, spf=spf, dkim=dkim, dmarc=dmarc,
                              scores=self.scores)
        return Builtin(tests, rdns, rdns_name, helo_state, problems)

    def _known(self, ip: str, helo: str, own_names: Sequence[str], own_ips: Sequence[str],
                auth: InboundVerdict | None) -> Builtin | None:
        """The built-in checks from what is at hand (no DNS), or None."""
        try:
            return self._builtin(ip, helo, own_names, own_ips, auth, cache_only=True)
        except NotCached:
            return None

    def _run(self, key: tuple[str, str], ip: str, helo: str, own_names: Sequence[str], own_ips: Sequence[str],
             auth: InboundVerdict | None, prefetch: bool = False) -> asyncio.Future[Builtin]:
        """The built-in checks on the pool, known as under way for ``key``."""
        call = asyncio.get_running_loop().run_in_executor(self._pool, self._builtin, ip, helo, own_names, own_ips,
                                                          auth)
        self._inflight[key] = call
        if prefetch:
            self._prefetches += 1

        def done(f: asyncio.Future[Builtin]) -> None:
            if self._inflight.get(key) is f:
                del self._inflight[key]
            if prefetch:
                self._prefetches -= 1
                if not f.cancelled():
                    f.exception()  # retrieved: a failure shows in the message's own run

        call.add_done_callback(done)
        return call

    async def _after(self, pending: asyncio.Future[Builtin], ip: str, helo: str, own_names: Sequence[str],
                     own_ips: Sequence[str], auth: InboundVerdict | None) -> Builtin:
        """The built-in checks once the same client's run under way ended:
        from its answers (kept by the resolver and _recent), else a run of
        this message's own."""
        with contextlib.suppress(Exception):
            await asyncio.shield(pending)
        known = self._known(ip, helo, own_names, own_ips, auth)
        if known is not None:
            return known
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._builtin, ip, helo, own_names,
                                                                 own_ips, auth)

    def prefetch(self, ip: str, helo: str, own_ips: Sequence[str]) -> None:
        """Start a client's DNS checks (reverse DNS, HELO, DNS lists: they
        depend on its address and HELO name only) as soon as it has named
        itself, so its message's verdict finds them done; the verdict is
        the same as without. Nothing when they are at hand or under way
        already, for a trusted client, before this server's own names are
        known, or with PREFETCH_MAX runs under way."""
        key = (ip, helo.lower())
        if self.resolver is not None:
            with self._recent_lock:
                hit = self._recent.get(key)
            if hit is not None and hit[0] > time.monotonic():
                # at hand (a client in _recent is not a trusted one, see
                # _builtin): the message's own lookup finds them
                return
        names = self._own_names
        if (self.resolver is None or self._prefetches >= PREFETCH_MAX or names is None
                or names[0] != self.store.directory_version or self._trusted(ip)):
            return
        if key in self._inflight or self._known(ip, helo, names[1], own_ips, None) is not None:
            return
        self._run(key, ip, helo, names[1], own_ips, None, prefetch=True)

    async def _rspamd(self, message: bytes, **envelope: Any) -> RspamdResult | str:
        assert self.rspamd is not None
        try:
            return await self.rspamd.check(message, **envelope)
        except RspamdUnavailable as exc:
            return str(exc) or "unavailable"

    async def judge(
        self,
        message: bytes,
        *,
        queue_id: str,
        ip: str,
        helo: str,
        reverse_path: str,
        rcpts: Sequence[str],
        accounts: Sequence[Account],
        auth: InboundVerdict | None = None,
        own_ips: Sequence[str] = (),
        user: str | None = None,
    ) -> Judgement:
        """The verdict on ``message`` (see module doc); never raises for
        anything rspamd or DNS do."""
        started = time.monotonic()
        end, body_start = header_end(message)  # once: both steps below need it
        stripped = headers.strip_fields(message, end=end)
        if stripped is not message:
            end, body_start = header_end(stripped)
        message = stripped
        message_id, froms = _header_fields(message, body_start)
        own_names = await self._names()
        loop = asyncio.get_running_loop()
        builtin_call: asyncio.Future[Builtin]
        known = self._known(ip, helo, own_names, own_ips, auth)
        if known is not None:
            builtin_call = loop.create_future()
            builtin_call.set_result(known)
        else:
            key = (ip, helo.lower())
            pending = self._inflight.get(key)
            if pending is not None:
                # the same client's checks are under way (its prefetch, a
                # message of another of its connections): their answers serve
                builtin_call = asyncio.ensure_future(self._after(pending, ip, helo, own_names, own_ips, auth))
            else:
                builtin_call = self._run(key, ip, helo, own_names, own_ips, auth)
        verdict: RspamdResult | str | None = None
        if self.rspamd is not None:
            # Hostname: the forward-confirmed name ("unknown" without one,
            # as milters pass it), when the rDNS answer is at hand already;
            # else none rather than a wait for the check's thread.
            hostname = None
            if builtin_call.done():
                known = builtin_call.result()
                hostname = known.rdns_name if known.rdns == "ok" else (
                    "unknown" if known.rdns in ("none", "not-confirmed") else None)
            verdict = await self._rspamd(message, ip=ip, helo=helo, mail_from=reverse_path, rcpts=rcpts,
                                         hostname=hostname, queue_id=queue_id, user=user)
        builtin = await builtin_call
        tests = list(builtin.tests.hits)
        action, text, spam = "accept", "", False
        if isinstance(verdict, RspamdResult):
            tests += [(name, round(points, 2)) for name, points in verdict.symbols.items() if points]
            if verdict.action == "reject":
                action, text = "reject", verdict.message or "Spam message rejected"
            elif verdict.action in ("soft reject", "greylist"):
                action, text = "tempfail", verdict.message or "Try again later"
            elif verdict.action in ("add header", "rewrite subject"):
                spam = True
            if action == "accept":
                remove = [n for n in verdict.remove_headers if n.lower() not in _OURS]
                if remove:
                    message = headers.strip_fields(message, (), remove)
                add = [(n, v) for n, v in verdict.add_headers if n.lower() not in _OURS]
                if add:
                    message = headers.add_fields(message, add)
                if verdict.action == "rewrite subject" and verdict.subject:
                    message = headers.rewrite_subject(message, verdict.subject)
        score = round(sum(p for _, p in tests), 2)
        names = [n for n, _ in tests]
        filings: dict[int, Filing] = {}
        users: dict[str, dict[str, Any]] = {}
        if action == "accept":
            senders: list[str] | None = None
            for account in accounts:
                if account.id in filings:
                    continue
                own = await self._prefs(account.id)
                if senders is None and (own.allow or own.block):
                    # the From addresses count only against an allow or block list
                    senders = [reverse_path, *_from_addresses(froms)]
                filing = file_message(score, names, spam=spam, prefs=own,
                                      default_threshold=self.config.junk_threshold,
                                      senders=senders if senders is not None else [reverse_path])
                filings[account.id] = filing
                users[account.address] = {"junk": filing.junk, "required": filing.required,
                                          "reason": filing.reason}
        record: dict[str, Any] = {
            "ts": round(time.time(), 3), "queue_id": queue_id, "message_id": message_id, "ip": ip, "helo": helo[:255],
            "from": reverse_path[:300], "to": [r[:300] for r in rcpts[:50]], "action": action, "score": score,
            "tests": dict(tests), "rdns": builtin.rdns, "rdns_name": builtin.rdns_name, "helo_check": builtin.helo,
            "problems": builtin.problems, "users": users,
        }
        if isinstance(verdict, RspamdResult):
            record["rspamd"] = {"action": verdict.action, "score": verdict.score, "required": verdict.required}
        elif isinstance(verdict, str):
            record["rspamd"] = {"error": verdict}
        if text:
            record["reply"] = text
        record["ms"] = round((time.monotonic() - started) * 1000, 1)
        self._report(record, verdict)
        return Judgement(action, text, score, message, filings)

    def _report(self, record: dict[str, Any], verdict: RspamdResult | str | None) -> None:
        junk = [u for u, f in record["users"].items() if f["junk"]]
        level = logging.INFO
        rspamd = None
        if isinstance(verdict, RspamdResult):
            rspamd = f"{verdict.action}/{verdict.score:g}"
        elif isinstance(verdict, str):
            rspamd, level = f"unavailable: {verdict}", logging.WARNING
        logs.event(log, level, "spam_verdict", ip=record["ip"], msgid=record["queue_id"],
                   action=record["action"], score=record["score"],
                   tests=[f"{n}={p:g}" for n, p in record["tests"].items()], rspamd=rspamd,
                   junk=junk or None, reasons=[f"{u}:{f['reason']}" for u, f in record["users"].items()
                                               if f["reason"]] or None,
                   problems=record["problems"] or None, reply=record.get("reply"))
        if record["action"] == "accept":
            # written with the others of this turn of the event loop, before
            # the message's delivery commits (store/spamlog.py)
            self.decisions.append_soon(record)
        else:
            # a refusal is answered at once: its record is written first
            try:
                self.decisions.append(record)
            except OSError as exc:
                log.error("spam: the decision record cannot be written: %s", exc)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.decisions.close()
        if self.rspamd is not None:
            await self.rspamd.close()
